//! `switchboard simulate`: walk a flow with scripted keys and canned web answers.
//!
//! This module owns the simulated world around one call: prompts end at once, the
//! caller types one group of keys per question, web services answer from a fixture file,
//! a queue connects an agent who talks for a minute, and timers fire by jumping the clock.
//! It never opens a socket or plays audio, so ops can try an edit before saving it.
//! What it prints comes from the interpreter's trace, so secure input stays masked.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::interpreter::{Action, Event, Interpreter, QueueResult};
use super::model::HttpMethod;
use super::FlowSet;

/// The call to simulate.
#[derive(Debug, Clone)]
pub struct Script {
    /// One group of keys per question, in order: `"1,123456#"` answers a menu with 1 and
    /// a collect with 123456#. An empty group is a caller who presses nothing.
    pub keys: Vec<String>,
    pub caller: String,
    pub dialed: String,
    /// When the call starts.
    pub at: Timestamp,
    pub http: Vec<FixtureEntry>,
    /// Queues fail (no agents) instead of connecting one.
    pub no_agents: bool,
}

impl Script {
    /// Splits `--keys` text into groups (`"1,,42#"` → `["1", "", "42#"]`).
    pub fn parse_keys(text: &str) -> Result<Vec<String>, String> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<String> = text.split(',').map(|g| g.trim().to_string()).collect();
        for g in &groups {
            if let Some(bad) = g
                .chars()
                .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
            {
                return Err(format!(
                    "\"{bad}\" in --keys is not a phone key; use 0-9, *, #, A-D and commas between answers"
                ));
            }
        }
        Ok(groups)
    }
}

/// One canned answer in an HTTP fixture file (a YAML list of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEntry {
    /// The URL after templating; a trailing `*` matches any rest.
    pub url: String,
    /// Only this method; any when absent.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// The JSON answer.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Fail the request with this reason instead of answering.
    #[serde(default)]
    pub fail: Option<String>,
    /// Never answer, so the node's timeout decides.
    #[serde(default)]
    pub timeout: bool,
}

fn default_status() -> u16 {
    200
}

/// Reads an HTTP fixture file.
pub fn parse_fixture(text: &str) -> Result<Vec<FixtureEntry>, String> {
    serde_saphyr::from_str(text).map_err(|e| e.without_snippet().to_string())
}

impl FixtureEntry {
    fn matches(&self, method: HttpMethod, url: &str) -> bool {
        self.method.is_none_or(|m| m == method)
            && match self.url.strip_suffix('*') {
                Some(prefix) => url.starts_with(prefix),
                None => self.url == url,
            }
    }
}

/// Runs the call and returns what happened, one line per step.
pub fn run(flows: Arc<FlowSet>, flow: &str, script: &Script) -> Result<Vec<String>, String> {
    let mut ivr = Interpreter::new(flows, flow).map_err(|e| e.to_string())?;
    let mut sim = Sim {
        start: script.at,
        now: script.at,
        lines: Vec::new(),
        shown: 0,
        keys: script.keys.iter().cloned().collect(),
        playing: None,
        new_question: false,
        timer: None,
        pending: VecDeque::new(),
        finished: false,
    };
    sim.say(format!(
        "call from {} to {} at {}",
        script.caller, script.dialed, script.at
    ));
    ivr.handle(
        sim.now,
        Event::Started {
            caller: script.caller.clone(),
            dialed: script.dialed.clone(),
        },
    );
    // Enough for any sane flow; a flow that never ends (it always waits again) stops here.
    for _ in 0..10_000 {
        sim.drain(&mut ivr, script);
        if sim.finished {
            break;
        }
        if let Some((delay, event)) = sim.pending.pop_front() {
            sim.now += delay;
            ivr.handle(sim.now, event);
            continue;
        }
        if let Some(play) = sim.playing.take() {
            ivr.handle(sim.now, Event::PromptFinished { play });
            continue;
        }
        if sim.new_question && ivr.is_waiting_for_keys() {
            sim.new_question = false;
            match sim.keys.pop_front() {
                Some(group) if !group.is_empty() => {
                    for key in group.chars() {
                        ivr.handle(sim.now, Event::Digit(key));
                        sim.drain(&mut ivr, script);
                        if !ivr.is_waiting_for_keys() {
                            break;
                        }
                    }
                    continue;
                }
                Some(_) => sim.say("caller presses nothing".into()),
                None => sim.say("caller presses nothing (no more --keys)".into()),
            }
        }
        if let Some(at) = sim.timer.take() {
            sim.now = sim.now.max(at);
            sim.say("timer fires".into());
            ivr.handle(sim.now, Event::Timer);
            continue;
        }
        return Err(format!(
            "the simulation is stuck at {}/{}: the flow waits for something the simulator cannot give",
            ivr.position().0,
            ivr.position().1
        ));
    }
    if !sim.finished {
        return Err("the flow did not finish after 10000 steps".into());
    }
    sim.flush_trace(&ivr);
    let mut vars = String::from("variables:");
    for (k, v) in ivr.variables() {
        let _ = write!(vars, " {k}=\"{v}\"");
    }
    sim.lines.push(vars);
    if let Some(s) = ivr.trace().survey {
        sim.lines.push(format!(
            "survey: csat {}, resolved {}",
            s.csat.map(|c| c.to_string()).unwrap_or("-".into()),
            s.resolved
                .map(|r| if r { "yes" } else { "no" }.to_string())
                .unwrap_or("-".into())
        ));
    }
    Ok(sim.lines)
}

struct Sim {
    start: Timestamp,
    now: Timestamp,
    lines: Vec<String>,
    /// Trace entries already printed.
    shown: usize,
    keys: VecDeque<String>,
    playing: Option<u64>,
    /// A question prompt was played; its answer is the next key group.
    new_question: bool,
    timer: Option<Timestamp>,
    /// Events the simulated world will send, each after a delay.
    pending: VecDeque<(SignedDuration, Event)>,
    finished: bool,
}

impl Sim {
    fn say(&mut self, text: String) {
        let secs = self.now.duration_since(self.start).as_secs_f64();
        self.lines.push(format!("[{secs:>6.1}s] {text}"));
    }

    fn flush_trace(&mut self, ivr: &Interpreter) {
        let entries = &ivr.trace().entries[self.shown..];
        let texts: Vec<(Timestamp, String)> =
            entries.iter().map(|e| (e.at, e.step.to_string())).collect();
        self.shown += texts.len();
        for (at, text) in texts {
            let secs = at.duration_since(self.start).as_secs_f64();
            self.lines.push(format!("[{secs:>6.1}s] {text}"));
        }
    }

    fn drain(&mut self, ivr: &mut Interpreter, script: &Script) {
        self.flush_trace(ivr);
        while let Some(action) = ivr.poll() {
            self.flush_trace(ivr);
            match action {
                Action::Play {
                    id,
                    files,
                    barge_in,
                } => {
                    self.playing = Some(id);
                    self.new_question = barge_in;
                    self.say(format!("  play {}", files.join(" ")));
                }
                Action::StopPlayback => {
                    self.playing = None;
                    self.say("  stop playback".into());
                }
                Action::ArmTimer { at } => self.timer = Some(at),
                Action::HttpRequest {
                    id, method, url, ..
                } => {
                    // The URL is not printed here: it may hold secure values. The trace
                    // line before this one shows it masked.
                    let event = match script.http.iter().find(|f| f.matches(method, &url)) {
                        None => {
                            self.say("  no fixture matches; the request fails (the simulator has no network)".into());
                            Some(Event::HttpFailed {
                                request: id,
                                reason: "no fixture".into(),
                            })
                        }
                        Some(f) if f.timeout => {
                            self.say("  fixture: no answer".into());
                            None
                        }
                        Some(FixtureEntry {
                            fail: Some(reason), ..
                        }) => {
                            self.say(format!("  fixture: fails ({reason})"));
                            Some(Event::HttpFailed {
                                request: id,
                                reason: reason.clone(),
                            })
                        }
                        Some(f) => {
                            self.say(format!("  fixture: answers {}", f.status));
                            Some(Event::HttpResult {
                                request: id,
                                status: f.status,
                                body: f.body.as_ref().map(|b| b.to_string()).unwrap_or_default(),
                            })
                        }
                    };
                    if let Some(e) = event {
                        self.pending
                            .push_back((SignedDuration::from_millis(200), e));
                    }
                }
                Action::Enqueue {
                    queue,
                    skills,
                    priority,
                    ..
                } => {
                    let skills: Vec<String> =
                        skills.iter().map(|(s, l)| format!("{s}>={l}")).collect();
                    self.say(format!(
                        "  enqueue in \"{queue}\" (skills: {}; priority {priority})",
                        if skills.is_empty() {
                            "none".into()
                        } else {
                            skills.join(", ")
                        }
                    ));
                    if script.no_agents {
                        self.pending.push_back((
                            SignedDuration::from_secs(1),
                            Event::QueueResult(QueueResult::Failed {
                                reason: "no agents (--no-agents)".into(),
                            }),
                        ));
                    } else {
                        self.pending.push_back((
                            SignedDuration::from_secs(20),
                            Event::QueueResult(QueueResult::Connected {
                                agent: "simulated-agent".into(),
                            }),
                        ));
                        self.pending
                            .push_back((SignedDuration::from_secs(60), Event::AgentHungUp));
                    }
                }
                // The trace has already said where to.
                Action::Transfer { .. } => {}
                Action::Record {
                    mailbox, beep, max, ..
                } => {
                    self.say(format!(
                        "  record into mailbox \"{mailbox}\" ({}up to {} s)",
                        if beep { "beep, " } else { "" },
                        max.as_secs()
                    ));
                    self.pending.push_back((
                        SignedDuration::from_secs(10),
                        Event::RecordingFinished {
                            file: Some(format!("voicemail/{mailbox}/simulated.wav")),
                        },
                    ));
                }
                Action::PauseRecording => self.say("  pause call recording (secure input)".into()),
                Action::RecordConversation(mode) => {
                    self.say(format!("  the conversation is recorded: {mode:?}"))
                }
                Action::ResumeRecording => self.say("  resume call recording".into()),
                Action::Hangup => self.say("  hang up".into()),
                // The trace has already said how it ended.
                Action::Finished { .. } => self.finished = true,
            }
        }
        self.flush_trace(ivr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivr::validate::{self, Options};

    fn demo() -> Arc<FlowSet> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ivr-flows");
        let (set, report) = validate::load_dir(&dir, &Options::default());
        assert!(report.is_ok(), "{:?}", report.errors);
        Arc::new(set.unwrap())
    }

    fn script(keys: &str) -> Script {
        Script {
            keys: Script::parse_keys(keys).unwrap(),
            caller: "+905551112233".into(),
            dialed: "100".into(),
            at: "2026-12-31T10:00:00+03:00".parse().unwrap(),
            http: Vec::new(),
            no_agents: false,
        }
    }

    #[test]
    fn demo_billing_then_survey() {
        let out = run(demo(), "main", &script("1,5,1")).unwrap().join("\n");
        assert!(out.contains("enqueue in \"billing\""), "{out}");
        assert!(out.contains("survey: csat 5, resolved yes"), "{out}");
    }

    #[test]
    fn demo_account_lookup_uses_the_fixture_and_masks_nothing_it_should_not() {
        let mut s = script("3,123456#,4,2");
        s.http = parse_fixture(
            "- url: https://crm.example.com/api/accounts/123456\n  body: { name: Ada, tier: gold }\n",
        )
        .unwrap();
        let out = run(demo(), "main", &s).unwrap().join("\n");
        assert!(out.contains("fixture: answers 200"), "{out}");
        assert!(out.contains("customer_name = \"Ada\""), "{out}");
        assert!(out.contains("enqueue in \"billing\""), "{out}");
    }

    #[test]
    fn demo_account_lookup_falls_back_without_network() {
        let out = run(demo(), "main", &script("3,123456#"))
            .unwrap()
            .join("\n");
        assert!(out.contains("no fixture matches"), "{out}");
        assert!(out.contains("enqueue in \"billing\""), "{out}");
    }

    #[test]
    fn demo_operator_and_silence() {
        let out = run(demo(), "main", &script("0")).unwrap().join("\n");
        assert!(out.contains("transfer to extension 2001"), "{out}");
        let out = run(demo(), "main", &script("")).unwrap().join("\n");
        assert!(out.contains("timer fires"), "{out}");
        assert!(out.contains("finished"), "{out}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(Script::parse_keys("1,x").is_err());
        assert_eq!(Script::parse_keys("1,,2#").unwrap(), ["1", "", "2#"]);
    }
}
