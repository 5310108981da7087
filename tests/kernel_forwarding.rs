//! Kernel forwarding (`rtp.kernel_forwarding: on`) with real softphones: a plain bridge
//! is handed to the kernel's tc program within its first seconds, and a recording
//! started through the API takes it back to the relay; both parties' audio runs on
//! across both switches, and the call's record says the kernel carried it; the same
//! with the agent on another host (behind NAT, over a veth link).
//!
//! Needs root (CAP_BPF and CAP_NET_ADMIN) and a build with clang and libbpf-dev, as the
//! README's test command provides; without them the server refuses to start with
//! kernel forwarding on and this test fails saying why.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::api::{sample, Api, ADMIN, REPORTING};
use common::audio::{read_wav, tone_shares_in_blocks, Wav, SILENCE_RMS};
use common::nat::{self, Nat};
use common::phone::{tone_wav, Phone};
use common::*;

const CALLER: f64 = 440.0;
const AGENT: f64 = 700.0;

/// The kernel's streams now (one per direction of a bridge it carries).
fn kernel_streams(api: &Api) -> f64 {
    let text = api.get("/metrics", REPORTING).text;
    sample(&text, "switchboard_rtp_kernel_streams")
}

/// Waits until the kernel carries `n` streams; when that was seen.
fn wait_streams(api: &Api, n: f64, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let now = kernel_streams(api);
        if now == n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the kernel carries {now} streams, not {n}, after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The 20 ms stretches of `wav`'s first channel between `from` and `to` (from the
/// file's start) in which `hz` is not the dominant sound: silence where packets were
/// missing, or anything else.
fn dropouts(wav: &Wav, hz: f64, from: Duration, to: Duration) -> Vec<Duration> {
    let samples = &wav.channels[0];
    let block = wav.rate as usize / 50;
    let at = |d: Duration| ((d.as_secs_f64() * f64::from(wav.rate)) as usize).min(samples.len());
    let (a, b) = (at(from), at(to));
    assert!(
        b > a + wav.rate as usize,
        "{} is {:?} long; no room for {from:?}..{to:?}",
        wav.path.display(),
        wav.duration()
    );
    let mut out = Vec::new();
    for (i, chunk) in samples[a..b].chunks_exact(block).enumerate() {
        let t = tone_shares_in_blocks(chunk, wav.rate, &[hz], block);
        if t.rms < SILENCE_RMS || t.shares[0] < 0.5 {
            out.push(from + Duration::from_millis(20 * i as u64));
        }
    }
    out
}

#[test]
fn a_plain_bridge_goes_to_the_kernel_and_a_recording_brings_it_back_with_no_gap() {
    let server = Server::start_with(ServerConfig {
        api: true,
        extra_rtp: vec!["kernel_forwarding: on".into()],
        ..ServerConfig::default()
    });
    call_through_the_kernel(&server, None);
}

/// The agent at home behind NAT, reached over a veth link: the kernel sends the
/// caller's stream out of that interface (through the neighbour table, with no IP
/// forwarding on this host). The agent's stream to the caller on this host stays with
/// the relay: from our own address, in on another interface than loopback, IP would
/// take it for a martian.
#[test]
fn a_bridge_to_a_phone_on_another_host_is_forwarded_out_of_its_interface() {
    // Before the server: it attaches to the interfaces there are when it starts.
    let nat = Nat::new();
    let server = Server::start_with(ServerConfig {
        api: true,
        public_ip: Some(nat::SERVER_IP.into()),
        extra_rtp: vec!["kernel_forwarding: on".into()],
        ..ServerConfig::default()
    });
    call_through_the_kernel(&server, Some(&nat));
}

/// A caller on this host calls agent 2001 (behind `nat` if given); once the kernel
/// carries the bridge, a recording takes it back; then the checks.
fn call_through_the_kernel(server: &Server, nat: Option<&Nat>) {
    let api = Api::new(server);
    let text = api.get("/metrics", REPORTING).text;
    assert_eq!(
        sample(&text, "switchboard_rtp_kernel_forwarding"),
        1.0,
        "{text}"
    );

    let work = tempfile::tempdir().unwrap();
    let mut agent = Phone::agent(server, "2001").auto_answer().source(&tone_wav(
        work.path(),
        AGENT as u32,
        8000,
    ));
    if let Some(nat) = nat {
        agent = agent.behind(nat);
    }
    let mut agent = agent.start(server);
    let mut caller = Phone::dialler("caller")
        .source(&tone_wav(work.path(), CALLER as u32, 8000))
        .start(server);
    caller.call(server, "2001");
    caller.wait_established(Duration::from_secs(10));
    let answered = Instant::now();
    agent.wait_established(Duration::from_secs(10));

    // Relayed first, handed over at a one-second check once both streams flow.
    let streams = if nat.is_some() { 1.0 } else { 2.0 };
    let handed_over = wait_streams(&api, streams, Duration::from_secs(5));
    thread::sleep(Duration::from_secs(3));
    let live = api.ok("/api/v1/calls", ADMIN);
    let uuid = live[0]["call_uuid"].as_str().unwrap().to_string();
    let r = api.post(
        &format!("/api/v1/calls/{uuid}/recording"),
        ADMIN,
        serde_json::json!({ "action": "start" }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let recording_asked = Instant::now();
    // The recording needs every packet: the relay takes them back before it starts.
    wait_streams(&api, 0.0, Duration::from_secs(2));
    thread::sleep(Duration::from_secs(3));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));
    caller.quit();
    agent.quit();

    let rows = server.wait_for_calls(1, Duration::from_secs(10));
    let rec = &rows[0];
    assert_eq!(rec.media_path.as_deref(), Some("kernel"), "{rec:#?}");
    // About 3 s of each stream in the kernel at 50 packets a second.
    let kernel = rec.kernel_rtp.unwrap_or(0);
    assert!(
        kernel as f64 >= 125.0 * streams,
        "the kernel forwarded only {kernel} packets: {rec:#?}"
    );
    // The counters include the kernel's share: 7+ s each way at 50 a second.
    for got in [rec.a_rtp_in, rec.a_rtp_out, rec.b_rtp_in, rec.b_rtp_out] {
        assert!(got.unwrap_or(0) >= 330, "{rec:#?}");
    }
    assert_eq!(
        (rec.a_rtp_lost, rec.b_rtp_lost),
        (Some(0), Some(0)),
        "{rec:#?}"
    );
    let text = api.get("/metrics", REPORTING).text;
    assert_eq!(
        sample(&text, "switchboard_rtp_kernel_streams"),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "switchboard_rtp_kernel_calls_total"),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "switchboard_rtp_kernel_packets_total") >= kernel as f64,
        "{text}"
    );

    // Each phone heard the other's tone without a break: through the relay, the
    // hand-over to the kernel, the kernel, and the recording's take-back.
    let to = |t: Instant| t.duration_since(answered);
    let (handed_over, recording_asked) = (to(handed_over), to(recording_asked));
    for (phone, hz) in [(&agent, CALLER), (&caller, AGENT)] {
        let wav = read_wav(&phone.heard());
        let end = wav.duration().saturating_sub(Duration::from_millis(700));
        let from = Duration::from_millis(500);
        assert!(
            from < handed_over && recording_asked + Duration::from_secs(1) < end,
            "{} heard {} ({:?}), which does not cover the switches at {handed_over:?} and \
             {recording_asked:?}",
            phone.name(),
            wav.path.display(),
            wav.duration()
        );
        let gaps = dropouts(&wav, hz, from, end);
        assert!(
            gaps.is_empty(),
            "{} has 20 ms stretches without the {hz} Hz tone at {gaps:?} (kernel from \
             {handed_over:?}, relay again from {recording_asked:?})",
            wav.path.display()
        );
    }

    // The recording has both parties from its start.
    let name = rec.recording.clone().expect("the call was recorded");
    let wav = read_wav(&server.data_dir.join(name));
    let tones = [CALLER, AGENT];
    for (channel, hz) in [(0, CALLER), (1, AGENT)] {
        let t = common::audio::tone_shares(&wav.channels[channel], wav.rate, &tones);
        assert!(t.share(hz) > 0.5, "recording channel {channel}: {t:?}");
    }
}

/// Calls that end while the kernel carries them leave no stream behind, even when the
/// next call gets the same ports (the server here has room for one call's media only).
#[test]
fn a_call_that_ends_in_the_kernel_leaves_no_stream_behind_for_the_next_on_its_ports() {
    let server = Server::start_with(ServerConfig {
        api: true,
        rtp_port_count: 4,
        extra_rtp: vec!["kernel_forwarding: on".into()],
        ..ServerConfig::default()
    });
    let api = Api::new(&server);
    let work = tempfile::tempdir().unwrap();
    let mut agent = Phone::agent(&server, "2001")
        .auto_answer()
        .source(&tone_wav(work.path(), AGENT as u32, 8000))
        .start(&server);
    let mut caller = Phone::dialler("caller")
        .source(&tone_wav(work.path(), CALLER as u32, 8000))
        .start(&server);
    for n in 1..=2 {
        caller.call(&server, "2001");
        caller.wait_established(Duration::from_secs(10));
        wait_streams(&api, 2.0, Duration::from_secs(5));
        thread::sleep(Duration::from_secs(2));
        caller.hangup();
        caller.wait_closed(Duration::from_secs(10));
        agent.wait_closed(Duration::from_secs(10));
        wait_streams(&api, 0.0, Duration::from_secs(2));
        let rows = server.wait_for_calls(n, Duration::from_secs(10));
        let rec = &rows[n - 1];
        assert_eq!(
            rec.media_path.as_deref(),
            Some("kernel"),
            "call {n}: {rec:#?}"
        );
        // 3+ s each way at 50 packets a second, most of it in the kernel, none lost.
        for got in [rec.a_rtp_in, rec.a_rtp_out, rec.b_rtp_in, rec.b_rtp_out] {
            assert!(got.unwrap_or(0) >= 140, "call {n}: {rec:#?}");
        }
        assert!(rec.kernel_rtp.unwrap_or(0) >= 180, "call {n}: {rec:#?}");
        assert_eq!(
            (rec.a_rtp_lost, rec.b_rtp_lost),
            (Some(0), Some(0)),
            "{rec:#?}"
        );
    }
    caller.quit();
    agent.quit();
    let text = api.get("/metrics", REPORTING).text;
    assert_eq!(
        sample(&text, "switchboard_rtp_kernel_calls_total"),
        2.0,
        "{text}"
    );
}
