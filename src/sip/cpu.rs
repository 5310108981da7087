//! The server's own CPU use over the last second, for call admission
//! (`limits.max_cpu_percent`) and `/metrics`. Read from `/proc/self/stat` (user and
//! system time) once a second by a task of its own, so that the switch only reads the
//! last figure and never waits on a file.

use std::time::{Duration, Instant};

/// Clock ticks per second of the times in `/proc` (`USER_HZ`, fixed at 100 by the
/// kernel's ABI on every architecture Linux runs on).
const USER_HZ: f64 = 100.0;
/// The shortest span a figure is taken over.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

/// Reports the process's CPU use, in percent of all the machine's cores, to `sink` once
/// a second. Where `/proc/self/stat` cannot be read it says so once and reports nothing.
pub fn spawn(sink: impl Fn(u32) + Send + 'static) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::spawn(async move {
        let mut last: Option<(u64, Instant)> = None;
        let mut every = tokio::time::interval(Duration::from_secs(1));
        // A busy runtime must not catch up with ticks back to back: a sample over a
        // few microseconds would read one tick of CPU as a full core.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let stat = match tokio::fs::read_to_string("/proc/self/stat").await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no CPU figure: limits.max_cpu_percent is not applied");
                    sink(0);
                    return;
                }
            };
            let Some(ticks) = cpu_ticks(&stat) else {
                sink(0);
                return;
            };
            let now = Instant::now();
            match last {
                Some((before, at)) if now - at >= MIN_SAMPLE => {
                    sink(percent(ticks.saturating_sub(before), now - at, cores));
                }
                // Too short to mean anything at 10 ms a tick: keep measuring from before.
                Some(_) => continue,
                None => {}
            }
            last = Some((ticks, now));
        }
    });
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces and parentheses itself, so fields count from the last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `ticks` of CPU used over `elapsed`, in percent of `cores` cores.
fn percent(ticks: u64, elapsed: Duration, cores: usize) -> u32 {
    let capacity = elapsed.as_secs_f64() * cores as f64;
    if capacity <= 0.0 {
        return 0;
    }
    (ticks as f64 / USER_HZ / capacity * 100.0)
        .round()
        .min(100.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (sw (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 350 150 0 0 20 0 9 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(500));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn percent_is_of_every_core() {
        // 1.5 s of CPU in one second on two cores: 75 %.
        assert_eq!(percent(150, Duration::from_secs(1), 2), 75);
        assert_eq!(percent(0, Duration::from_secs(1), 2), 0);
        // More than the cores can give (a clock step): capped.
        assert_eq!(percent(1_000, Duration::from_secs(1), 2), 100);
        assert_eq!(percent(10, Duration::ZERO, 2), 0);
    }
}
