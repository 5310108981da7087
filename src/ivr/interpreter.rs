//! One call's walk through a flow, as a sans-IO state machine.
//!
//! The call layer feeds [`Event`]s in with the current time ([`Interpreter::handle`]) and
//! drains [`Action`]s ([`Interpreter::poll`]) until `None`, then carries them out: play
//! files, arm the one timer, make the HTTP request, enqueue, transfer, record, hang up.
//! This module owns the call's variables, its position in the flow and its trace. It
//! never touches a socket, a file, a task or the clock, so a test of a 5-second timeout
//! is two function calls.
//!
//! Contract with the driver:
//! - one timer: each `ArmTimer` replaces the previous one; a `Timer` event that comes
//!   early or late for a deadline no longer pending is ignored, so cancelling is optional;
//! - `Play` and `HttpRequest` carry ids, and their completions must echo them: a prompt
//!   that finishes just as it is stopped, or an HTTP answer that arrives after its
//!   timeout, is then recognised as stale and ignored;
//! - after `Finished` the interpreter ignores everything.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::model::{At, Condition, Flow, HttpMethod, Literal, Node, Prompt};
use super::template::{self, Encoding, Filled, MASK};
use super::validate::prompt_path;
use super::{say, schedule, FlowSet};

/// Identifies one `Play` action; echoed by [`Event::PromptFinished`].
pub type PlayId = u64;
/// Identifies one `HttpRequest` action; echoed by the HTTP result events.
pub type RequestId = u64;

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The call was answered by the IVR.
    Started { caller: String, dialed: String },
    /// The prompt list of a `Play` action played to the end.
    PromptFinished { play: PlayId },
    /// The caller pressed a key (RFC 4733 or SIP INFO; `0-9`, `*`, `#`, `A-D`).
    Digit(char),
    /// The timer armed by the last `ArmTimer` fired.
    Timer,
    /// The web service answered. `body` is the response body as text.
    HttpResult {
        request: RequestId,
        status: u16,
        body: String,
    },
    /// The request could not be made or completed (refused, DNS, TLS, timeout).
    HttpFailed { request: RequestId, reason: String },
    /// What the ACD did with an `Enqueue`.
    QueueResult(QueueResult),
    /// The agent the queue connected hung up; the caller is back in the flow.
    AgentHungUp,
    /// A `Record` ended; `file` is where the message was stored (none if nothing was said).
    RecordingFinished { file: Option<String> },
    /// The caller hung up.
    CallerHungUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueResult {
    /// An agent answered; the call is bridged until `AgentHungUp` or `CallerHungUp`.
    Connected { agent: String },
    /// The queue could not take the call or gave up on it.
    Failed { reason: String },
}

/// Something the call layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these files (paths relative to the prompt root) in order, then send
    /// `PromptFinished { play: id }`. With `barge_in`, keys are expected while playing.
    Play {
        id: PlayId,
        files: Vec<String>,
        barge_in: bool,
    },
    /// Stop what is playing; send no `PromptFinished` for it (a stale one is ignored).
    StopPlayback,
    /// Send `Timer` at this instant, replacing any earlier timer.
    ArmTimer { at: Timestamp },
    /// Make this request and answer with `HttpResult` or `HttpFailed` for `id`.
    HttpRequest {
        id: RequestId,
        method: HttpMethod,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        timeout: Duration,
    },
    /// Put the caller in an ACD queue; answer with `QueueResult`. `data` is the call's
    /// non-secure variables, for the agent's screen pop and the call record.
    Enqueue {
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
        data: BTreeMap<String, String>,
    },
    /// Send the call elsewhere; the IVR is done with it (a `Finished` follows).
    Transfer {
        to: TransferTarget,
        data: BTreeMap<String, String>,
    },
    /// Record a message into the data directory and send `RecordingFinished`.
    Record {
        mailbox: String,
        beep: bool,
        max: Duration,
        silence: Duration,
    },
    /// The conversation the next `Enqueue` or `Transfer` leads to is recorded by
    /// this policy (the step's `record:`).
    RecordConversation(crate::ivr::model::RecordMode),
    /// Stop writing the call recording (secure collect: card numbers must not be kept).
    PauseRecording,
    /// Start writing the call recording again.
    ResumeRecording,
    /// Hang up the caller (a `Finished` follows).
    Hangup,
    /// The flow is over; store the trace and variables with the call record.
    Finished { outcome: Outcome },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// A user of this server.
    Extension(String),
    /// An outside number, dialled through a trunk.
    External(String),
}

impl fmt::Display for TransferTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferTarget::Extension(e) => write!(f, "extension {e}"),
            TransferTarget::External(n) => write!(f, "number {n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The flow ended the call (a `hangup` node, or nothing more to do).
    Completed,
    /// The call was transferred.
    Transferred,
    /// The caller hung up first.
    CallerHungUp,
    /// The flow could not go on (e.g. it spun without waiting); the reason is for logs.
    Failed { reason: String },
}

/// What a call did, in order, with secure values masked. Stored with the call record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub entries: Vec<TraceEntry>,
    pub survey: Option<SurveyAnswers>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    pub at: Timestamp,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Entered a node.
    Node {
        flow: String,
        node: String,
        kind: &'static str,
    },
    /// A key the flow used; `None` when it was typed into a secure collect.
    Key(Option<char>),
    /// A variable got a value (already masked when secure).
    Variable { name: String, value: String },
    /// Anything else worth knowing, in plain words.
    Note(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Node { flow, node, kind } => write!(f, "{flow}/{node} ({kind})"),
            Step::Key(Some(k)) => write!(f, "key {k}"),
            Step::Key(None) => write!(f, "key (hidden)"),
            Step::Variable { name, value } => write!(f, "{name} = \"{value}\""),
            Step::Note(n) => f.write_str(n),
        }
    }
}

/// A post-call survey's answers; `None` where the caller did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurveyAnswers {
    /// 1 (worst) to 5 (best).
    pub csat: Option<u8>,
    /// Whether the caller said the issue was resolved.
    pub resolved: Option<bool>,
}

#[derive(Debug, Clone)]
struct Var {
    value: String,
    secure: bool,
}

/// What the interpreter waits for.
#[derive(Debug)]
enum State {
    NotStarted,
    Playing {
        id: PlayId,
        barge_in: bool,
        then: AfterPlay,
    },
    Asking(Asking),
    Http {
        id: RequestId,
        deadline: Timestamp,
    },
    Queued,
    WithAgent,
    Recording,
    Done,
}

#[derive(Debug)]
enum AfterPlay {
    /// Go to this node, or end the call when `None`.
    Go(Option<String>),
    /// A voicemail greeting ended: start recording.
    Record,
}

/// Waiting for keys: a menu, a collect, or a survey question.
#[derive(Debug)]
struct Asking {
    question: Question,
    playing: Option<PlayId>,
    digits: String,
    retries_left: u32,
    deadline: Option<Timestamp>,
    /// The CSAT answer while the resolved question is asked.
    csat: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    Menu,
    Collect,
    Csat,
    Resolved,
}

/// Why a question is asked again.
#[derive(Debug, Clone, Copy)]
enum Retry {
    NoInput,
    Invalid,
}

/// How many nodes may run in a row without waiting for anything. The validator rejects
/// such loops within a flow; this catches ones that go through several flows.
const MAX_STEPS: u32 = 100;

/// One call in the IVR. See the module docs for the driving loop.
pub struct Interpreter {
    flows: Arc<FlowSet>,
    flow: Arc<Flow>,
    node: String,
    state: State,
    vars: BTreeMap<String, Var>,
    prompt_dir: String,
    /// Keys pressed during a barge-in `play`, kept for the next question.
    typeahead: VecDeque<char>,
    recording_paused: bool,
    out: VecDeque<Action>,
    trace: Trace,
    now: Timestamp,
    now_text: String,
    next_id: u64,
}

/// The flow to start does not exist in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFlow(pub String);

impl fmt::Display for UnknownFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "there is no flow named \"{}\"", self.0)
    }
}

impl std::error::Error for UnknownFlow {}

impl Interpreter {
    /// Prepares a call that will run `flow` from the set. The set is kept for the whole
    /// call, so a reload does not change the flow under it.
    pub fn new(flows: Arc<FlowSet>, flow: &str) -> Result<Self, UnknownFlow> {
        let f = flows
            .get(flow)
            .cloned()
            .ok_or_else(|| UnknownFlow(flow.to_string()))?;
        Ok(Interpreter {
            prompt_dir: f.prompts.value.clone(),
            node: f.entry.value.clone(),
            flow: f,
            flows,
            state: State::NotStarted,
            vars: BTreeMap::new(),
            typeahead: VecDeque::new(),
            recording_paused: false,
            out: VecDeque::new(),
            trace: Trace::default(),
            now: Timestamp::UNIX_EPOCH,
            now_text: String::new(),
            next_id: 1,
        })
    }

    /// Feeds one event that happened at `now`.
    pub fn handle(&mut self, now: Timestamp, event: Event) {
        self.now = now;
        self.now_text = now.to_string();
        match (&self.state, event) {
            (State::Done, _) => {}
            (State::NotStarted, Event::Started { caller, dialed }) => {
                self.set_var("caller", caller, false);
                self.set_var("dialed", dialed, false);
                self.set_var("started_at", now.to_string(), false);
                self.set_var("language", self.prompt_dir.clone(), false);
                let entry = self.flow.entry.value.clone();
                self.go(&entry);
            }
            (State::NotStarted, _) => {}
            (_, Event::CallerHungUp) => {
                self.note(format!("caller hung up at {}", self.node));
                self.finish(Outcome::CallerHungUp);
            }
            (_, Event::PromptFinished { play }) => self.on_prompt_finished(play),
            (_, Event::Digit(key)) => self.on_digit(key),
            (_, Event::Timer) => self.on_timer(),
            (
                State::Http { id, .. },
                Event::HttpResult {
                    request,
                    status,
                    body,
                },
            ) if *id == request => {
                self.http_answer(status, &body);
            }
            (State::Http { id, .. }, Event::HttpFailed { request, reason }) if *id == request => {
                self.http_error(format!("request failed: {reason}"));
            }
            (State::Queued, Event::QueueResult(QueueResult::Connected { agent })) => {
                self.note(format!("connected to agent {agent}"));
                self.set_var("agent", agent, false);
                self.state = State::WithAgent;
            }
            (State::Queued, Event::QueueResult(QueueResult::Failed { reason })) => {
                self.note(format!("queue failed: {reason}"));
                let on_fail = match self.current() {
                    Some(Node::Queue(q)) => q.on_fail.as_ref().map(|t| t.value.clone()),
                    _ => None,
                };
                self.go_or_end(on_fail);
            }
            (State::WithAgent, Event::AgentHungUp) => {
                self.note("agent hung up".into());
                let next = match self.current() {
                    Some(Node::Queue(q)) => q.next.as_ref().map(|t| t.value.clone()),
                    _ => None,
                };
                self.go_or_end(next);
            }
            (State::Recording, Event::RecordingFinished { file }) => {
                let next = match self.current() {
                    Some(Node::Voicemail(v)) => v.next.as_ref().map(|t| t.value.clone()),
                    _ => None,
                };
                match file {
                    Some(f) => self.set_var("voicemail_file", f, false),
                    None => self.note("no message was left".into()),
                }
                self.go_or_end(next);
            }
            // Stale completions and events that do not fit the state change nothing.
            _ => {}
        }
    }

    fn on_prompt_finished(&mut self, play: PlayId) {
        match &mut self.state {
            State::Playing { id, then, .. } if *id == play => {
                let then = std::mem::replace(then, AfterPlay::Go(None));
                self.after_play(then);
            }
            State::Asking(a) if a.playing == Some(play) => {
                a.playing = None;
                self.wait_for_key();
            }
            _ => {}
        }
    }

    fn on_digit(&mut self, key: char) {
        match &mut self.state {
            State::Playing {
                barge_in: true,
                then,
                ..
            } => {
                let then = std::mem::replace(then, AfterPlay::Go(None));
                self.out.push_back(Action::StopPlayback);
                self.typeahead.push_back(key);
                self.after_play(then);
            }
            State::Asking(a) => {
                if a.playing.take().is_some() {
                    self.out.push_back(Action::StopPlayback);
                }
                self.on_key(key);
            }
            // Keys while nothing listens (an agent call, a prompt without barge-in, a
            // request in flight) are not for the IVR.
            _ => {}
        }
    }

    fn on_timer(&mut self) {
        let now = self.now;
        match &mut self.state {
            State::Asking(a) if a.deadline.is_some_and(|d| now >= d) => {
                a.deadline = None;
                if a.question == Question::Collect && !a.digits.is_empty() {
                    self.complete_collect();
                } else {
                    self.retry(Retry::NoInput);
                }
            }
            State::Http { deadline, .. } if now >= *deadline => {
                let secs = self.http_node().map(|h| h.timeout_secs.value).unwrap_or(0);
                self.http_error(format!("no answer within {secs} s"));
            }
            _ => {}
        }
    }

    /// The next thing to do, if any. Drain until `None` after every `handle`.
    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The pending timer, if the interpreter is waiting for one.
    pub fn timer(&self) -> Option<Timestamp> {
        match &self.state {
            State::Asking(a) => a.deadline,
            State::Http { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether the flow is asking the caller for keys (a menu, collect or survey
    /// question), whether or not its prompt is still playing.
    pub fn is_waiting_for_keys(&self) -> bool {
        matches!(self.state, State::Asking(_))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Every variable, with secure values masked: for logs and the call record.
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .map(|(k, v)| {
                let value = if v.secure {
                    MASK.to_string()
                } else {
                    v.value.clone()
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// The variables that travel with the call (screen pop, SIP headers): secure ones only
    /// as their mask, so they cannot leak to an agent's screen.
    pub fn call_data(&self) -> BTreeMap<String, String> {
        // A secure value travels only as its mask: the agent sees that the caller gave
        // it, never what it was.
        self.vars
            .iter()
            .map(|(k, v)| {
                let value = if v.secure {
                    MASK.to_string()
                } else {
                    v.value.clone()
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// The flow and node the call is at.
    pub fn position(&self) -> (&str, &str) {
        (&self.flow.name.value, &self.node)
    }

    // ---- moving through the flow ----

    fn current(&self) -> Option<&Node> {
        self.flow
            .nodes
            .get(&At::new(self.node.clone()))
            .map(|n| &n.value)
    }

    /// Runs nodes from `target` until one waits for something.
    fn go(&mut self, target: &str) {
        let mut next = Some(target.to_string());
        let mut steps = 0;
        while let Some(name) = next.take() {
            steps += 1;
            if steps > MAX_STEPS {
                self.fail(format!(
                    "{MAX_STEPS} nodes in a row ran without waiting for the caller; the flows loop"
                ));
                return;
            }
            next = self.enter(&name);
        }
    }

    fn go_or_end(&mut self, target: Option<String>) {
        match target {
            Some(t) => self.go(&t),
            None => {
                self.out.push_back(Action::Hangup);
                self.finish(Outcome::Completed);
            }
        }
    }

    /// Starts a node. Returns the node to run next when this one finished at once.
    fn enter(&mut self, name: &str) -> Option<String> {
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(&At::new(name.to_string())) else {
            self.fail(format!(
                "node \"{name}\" is not in the flow \"{}\"",
                flow.name.value
            ));
            return None;
        };
        self.node = name.to_string();
        self.push(Step::Node {
            flow: flow.name.value.clone(),
            node: name.to_string(),
            kind: node.kind(),
        });
        match &node.value {
            Node::Play(p) => {
                if p.barge_in && !self.typeahead.is_empty() {
                    // The caller is already typing ahead; this prompt would be cut anyway.
                    return Some(p.next.value.clone());
                }
                let id = self.play(&p.prompts, p.barge_in);
                self.state = State::Playing {
                    id,
                    barge_in: p.barge_in,
                    then: AfterPlay::Go(Some(p.next.value.clone())),
                };
                None
            }
            Node::Menu(m) => {
                self.ask(Question::Menu, m.retries.value, None);
                None
            }
            Node::Collect(c) => {
                if c.secure && !self.recording_paused {
                    self.recording_paused = true;
                    self.out.push_back(Action::PauseRecording);
                }
                self.ask(Question::Collect, c.retries.value, None);
                None
            }
            Node::Survey(s) => {
                self.ask(Question::Csat, s.retries.value, None);
                None
            }
            Node::Set(s) => {
                for (name, value) in &s.vars {
                    let filled = self.fill(value, Encoding::Plain);
                    self.set_var(&name.value, filled.text, filled.secure);
                }
                Some(s.next.value.clone())
            }
            Node::Branch(b) => {
                for (i, case) in b.cases.iter().enumerate() {
                    if self.holds(&case.when) {
                        self.note(format!("case {} holds", i + 1));
                        return Some(case.then.value.clone());
                    }
                }
                self.note("no case holds; else".into());
                Some(b.otherwise.value.clone())
            }
            Node::Schedule(s) => {
                let open = schedule::is_open(s, self.now);
                let local = self.now.to_zoned(
                    jiff::tz::TimeZone::get(&s.timezone.value).unwrap_or(jiff::tz::TimeZone::UTC),
                );
                self.note(format!(
                    "{} at {} {}",
                    if open { "open" } else { "closed" },
                    local.strftime("%a %Y-%m-%d %H:%M"),
                    s.timezone.value
                ));
                Some(if open { &s.open } else { &s.closed }.value.clone())
            }
            Node::Http(h) => {
                let url = self.fill(&h.url, Encoding::Url);
                let mut headers: Vec<(String, String)> = h
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), self.fill(v, Encoding::Plain).text))
                    .collect();
                let body = h.body.as_ref().map(|b| {
                    if !headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    {
                        headers.push(("Content-Type".into(), "application/json".into()));
                    }
                    self.fill_json(b).to_string()
                });
                self.note(format!("{} {}", h.method, url.masked));
                let id = self.next_id();
                let timeout = Duration::from_secs(h.timeout_secs.value.into());
                let deadline = self.now + SignedDuration::from_secs(h.timeout_secs.value.into());
                self.out.push_back(Action::HttpRequest {
                    id,
                    method: h.method,
                    url: url.text,
                    headers,
                    body,
                    timeout,
                });
                self.out.push_back(Action::ArmTimer { at: deadline });
                self.state = State::Http { id, deadline };
                None
            }
            Node::Queue(q) => {
                if let Some(mode) = q.record {
                    self.out.push_back(Action::RecordConversation(mode));
                }
                self.out.push_back(Action::Enqueue {
                    queue: q.queue.value.clone(),
                    skills: q
                        .skills
                        .iter()
                        .map(|(k, v)| (k.value.clone(), v.value))
                        .collect(),
                    priority: q.priority.value,
                    data: self.call_data(),
                });
                self.state = State::Queued;
                None
            }
            Node::Transfer(t) => {
                let to = match (&t.extension, &t.number) {
                    (Some(ext), _) => TransferTarget::Extension(ext.value.clone()),
                    (None, Some(num)) => {
                        TransferTarget::External(self.fill(num, Encoding::Plain).text)
                    }
                    (None, None) => {
                        self.fail("transfer has neither extension nor number".into());
                        return None;
                    }
                };
                self.note(format!("transfer to {to}"));
                if let Some(mode) = t.record {
                    self.out.push_back(Action::RecordConversation(mode));
                }
                self.out.push_back(Action::Transfer {
                    to,
                    data: self.call_data(),
                });
                self.finish(Outcome::Transferred);
                None
            }
            Node::Voicemail(v) => {
                if v.greeting.is_empty() {
                    self.record();
                } else {
                    let id = self.play(&v.greeting, false);
                    self.state = State::Playing {
                        id,
                        barge_in: false,
                        then: AfterPlay::Record,
                    };
                }
                None
            }
            Node::Language(l) => {
                self.prompt_dir = l.dir.value.clone();
                self.set_var("language", l.dir.value.clone(), false);
                Some(l.next.value.clone())
            }
            Node::Goto(g) => {
                if let Some(other) = &g.flow {
                    let Some(f) = self.flows.get(&other.value).cloned() else {
                        self.fail(format!("there is no flow named \"{}\"", other.value));
                        return None;
                    };
                    let target = g
                        .node
                        .as_ref()
                        .map(|n| n.value.clone())
                        .unwrap_or_else(|| f.entry.value.clone());
                    self.flow = f;
                    Some(target)
                } else {
                    g.node.as_ref().map(|n| n.value.clone())
                }
            }
            Node::Hangup(_) => {
                self.out.push_back(Action::Hangup);
                self.finish(Outcome::Completed);
                None
            }
        }
    }

    fn after_play(&mut self, then: AfterPlay) {
        match then {
            AfterPlay::Go(target) => self.go_or_end(target),
            AfterPlay::Record => self.record(),
        }
    }

    fn record(&mut self) {
        let Some(Node::Voicemail(v)) = self.current().cloned() else {
            return;
        };
        let mailbox = self.fill(&v.mailbox, Encoding::Plain).text;
        self.note(format!("recording into mailbox {mailbox}"));
        self.out.push_back(Action::Record {
            mailbox,
            beep: v.beep,
            max: Duration::from_secs(v.max_secs.value.into()),
            silence: Duration::from_secs(v.silence_secs.value.into()),
        });
        self.state = State::Recording;
    }

    fn finish(&mut self, outcome: Outcome) {
        // A secure collect left by hang-up or failure must not leave the recording paused
        // for whatever the call layer does next (e.g. a transfer keeps recording).
        if self.recording_paused && outcome != Outcome::CallerHungUp {
            self.recording_paused = false;
            self.out.push_back(Action::ResumeRecording);
        }
        self.note(format!("finished: {outcome:?}"));
        self.out.push_back(Action::Finished { outcome });
        self.state = State::Done;
    }

    fn fail(&mut self, reason: String) {
        self.out.push_back(Action::Hangup);
        self.finish(Outcome::Failed { reason });
    }

    // ---- questions: menu, collect, survey ----

    /// Starts asking `question` with a fresh retry budget, then feeds it any keys the
    /// caller typed ahead.
    fn ask(&mut self, question: Question, retries: u32, csat: Option<u8>) {
        let mut a = Asking {
            question,
            playing: None,
            digits: String::new(),
            retries_left: retries,
            deadline: None,
            csat,
        };
        if self.typeahead.is_empty() {
            let prompts = self.question_prompts(question, None);
            a.playing = Some(self.play(&prompts, true));
            self.state = State::Asking(a);
            return;
        }
        self.state = State::Asking(a);
        while let Some(key) = self.typeahead.pop_front() {
            self.on_key(key);
            if !matches!(&self.state, State::Asking(a) if a.question == question) {
                break;
            }
        }
        if let State::Asking(a) = &self.state {
            if a.question == question && a.deadline.is_none() {
                self.wait_for_key();
            }
        }
    }

    /// The prompt (after the retry prompt, if any) for the current question.
    fn question_prompts(&self, question: Question, retry: Option<Retry>) -> Vec<At<Prompt>> {
        let mut out = Vec::new();
        match (self.current(), question) {
            (Some(Node::Menu(m)), _) => {
                match retry {
                    Some(Retry::NoInput) => out.extend(m.no_input.iter().cloned()),
                    Some(Retry::Invalid) => out.extend(m.invalid.iter().cloned()),
                    None => {}
                }
                out.extend(m.prompts.iter().cloned());
            }
            (Some(Node::Collect(c)), _) => {
                match retry {
                    Some(Retry::NoInput) => out.extend(c.no_input.iter().cloned()),
                    Some(Retry::Invalid) => out.extend(c.invalid.iter().cloned()),
                    None => {}
                }
                out.extend(c.prompts.iter().cloned());
            }
            (Some(Node::Survey(s)), q) => {
                if retry.is_some() {
                    out.extend(s.invalid.iter().cloned());
                }
                if q == Question::Resolved {
                    out.extend(s.resolved.iter().flatten().cloned());
                } else {
                    out.extend(s.csat.iter().cloned());
                }
            }
            _ => {}
        }
        out
    }

    fn timeouts(&self) -> (u32, u32) {
        match self.current() {
            Some(Node::Menu(m)) => (m.timeout_secs.value, m.timeout_secs.value),
            Some(Node::Collect(c)) => (
                c.first_digit_timeout_secs.value,
                c.inter_digit_timeout_secs.value,
            ),
            Some(Node::Survey(s)) => (s.timeout_secs.value, s.timeout_secs.value),
            _ => (5, 5),
        }
    }

    /// The prompt is over (or was cut): wait for the first or next key.
    fn wait_for_key(&mut self) {
        let (first, inter) = self.timeouts();
        let now = self.now;
        if let State::Asking(a) = &mut self.state {
            let secs = if a.digits.is_empty() { first } else { inter };
            let at = now + SignedDuration::from_secs(secs.into());
            a.deadline = Some(at);
            self.out.push_back(Action::ArmTimer { at });
        }
    }

    fn on_key(&mut self, key: char) {
        let (question, csat) = match &self.state {
            State::Asking(a) => (a.question, a.csat),
            _ => return,
        };
        let Some(node) = self.current().cloned() else {
            return;
        };
        match (node, question) {
            (Node::Menu(m), _) => {
                self.push(Step::Key(Some(key)));
                match m.options.get(&At::new(key.to_string())) {
                    Some(t) => self.go(&t.value),
                    None => self.retry(Retry::Invalid),
                }
            }
            (Node::Collect(c), _) => {
                self.push(Step::Key(if c.secure { None } else { Some(key) }));
                let is_terminator = c
                    .terminator
                    .as_ref()
                    .is_some_and(|t| t.value.starts_with(key));
                if is_terminator {
                    self.complete_collect();
                    return;
                }
                let State::Asking(a) = &mut self.state else {
                    return;
                };
                a.digits.push(key);
                a.deadline = None;
                let full = a.digits.len() >= c.max_digits.value as usize;
                let prompt_over = a.playing.is_none();
                if full {
                    self.complete_collect();
                } else if prompt_over {
                    self.wait_for_key();
                }
            }
            (Node::Survey(s), Question::Csat) => {
                self.push(Step::Key(Some(key)));
                match key.to_digit(10) {
                    Some(n @ 1..=5) => {
                        let csat = Some(n as u8);
                        if s.resolved.is_some() {
                            self.ask(Question::Resolved, s.retries.value, csat);
                        } else {
                            self.end_survey(csat, None);
                        }
                    }
                    _ => self.retry(Retry::Invalid),
                }
            }
            (Node::Survey(_), Question::Resolved) => {
                self.push(Step::Key(Some(key)));
                match key {
                    '1' => self.end_survey(csat, Some(true)),
                    '2' => self.end_survey(csat, Some(false)),
                    _ => self.retry(Retry::Invalid),
                }
            }
            _ => {}
        }
    }

    fn complete_collect(&mut self) {
        let Some(Node::Collect(c)) = self.current().cloned() else {
            return;
        };
        let State::Asking(a) = &mut self.state else {
            return;
        };
        let digits = std::mem::take(&mut a.digits);
        let long_enough = digits.len() >= c.min_digits.value as usize;
        let matches = c
            .pattern
            .as_ref()
            .is_none_or(|p| regex::Regex::new(&p.value).is_ok_and(|re| re.is_match(&digits)));
        if !(long_enough && matches) {
            let shown = if c.secure { MASK.to_string() } else { digits };
            self.note(format!("\"{shown}\" is not valid input"));
            self.retry(Retry::Invalid);
            return;
        }
        self.set_var(&c.variable.value, digits, c.secure);
        self.leave_secure(&c);
        self.go(&c.next.value);
    }

    fn leave_secure(&mut self, c: &super::model::Collect) {
        if c.secure && self.recording_paused {
            self.recording_paused = false;
            self.out.push_back(Action::ResumeRecording);
        }
    }

    fn retry(&mut self, why: Retry) {
        let State::Asking(a) = &mut self.state else {
            return;
        };
        // A wrong key voids whatever else the caller typed ahead.
        self.typeahead.clear();
        if a.retries_left == 0 {
            let question = a.question;
            let csat = a.csat;
            self.note(match why {
                Retry::NoInput => "no input; out of retries".into(),
                Retry::Invalid => "invalid input; out of retries".into(),
            });
            match self.current().cloned() {
                Some(Node::Menu(m)) => self.go(&m.on_fail.value),
                Some(Node::Collect(c)) => {
                    self.leave_secure(&c);
                    self.go(&c.on_fail.value);
                }
                // A caller who does not answer a survey question is not asked the rest.
                Some(Node::Survey(_)) if question == Question::Resolved => {
                    self.end_survey(csat, None)
                }
                Some(Node::Survey(_)) => self.end_survey(None, None),
                _ => {}
            }
            return;
        }
        a.retries_left -= 1;
        a.digits.clear();
        a.deadline = None;
        let question = a.question;
        self.note(match why {
            Retry::NoInput => "no input; asking again".into(),
            Retry::Invalid => "invalid input; asking again".into(),
        });
        let prompts = self.question_prompts(question, Some(why));
        let id = self.play(&prompts, true);
        if let State::Asking(a) = &mut self.state {
            a.playing = Some(id);
        }
    }

    fn end_survey(&mut self, csat: Option<u8>, resolved: Option<bool>) {
        let Some(Node::Survey(s)) = self.current().cloned() else {
            return;
        };
        if let Some(c) = csat {
            self.set_var("csat", c.to_string(), false);
        }
        if let Some(r) = resolved {
            self.set_var("resolved", if r { "yes" } else { "no" }.into(), false);
        }
        self.trace.survey = Some(SurveyAnswers { csat, resolved });
        let next = s.next.as_ref().map(|t| t.value.clone());
        if s.thanks.is_empty() {
            self.go_or_end(next);
        } else {
            let id = self.play(&s.thanks, false);
            self.state = State::Playing {
                id,
                barge_in: false,
                then: AfterPlay::Go(next),
            };
        }
    }

    // ---- HTTP ----

    fn http_node(&self) -> Option<&super::model::Http> {
        match self.current() {
            Some(Node::Http(h)) => Some(h),
            _ => None,
        }
    }

    fn http_answer(&mut self, status: u16, body: &str) {
        let Some(h) = self.http_node().cloned() else {
            return;
        };
        if !(200..300).contains(&status) {
            self.http_error(format!("answered {status}"));
            return;
        }
        let json: serde_json::Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                self.http_error(format!("answered {status} but the body is not JSON ({e})"));
                return;
            }
        };
        self.note(format!("answered {status}"));
        for (var, pointer) in &h.save {
            let text = match json.pointer(&pointer.value) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            self.set_var(&var.value, text, false);
        }
        self.go(&h.next.value);
    }

    fn http_error(&mut self, why: String) {
        let Some(h) = self.http_node().cloned() else {
            return;
        };
        self.note(why);
        self.go(&h.on_error.value);
    }

    // ---- values ----

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn play(&mut self, prompts: &[At<Prompt>], barge_in: bool) -> PlayId {
        let mut files = Vec::new();
        for p in prompts {
            match &p.value {
                Prompt::File(name) => {
                    let name = self.fill(name, Encoding::Plain).text;
                    files.push(prompt_path(&self.prompt_dir, &name));
                }
                Prompt::Say(s) => {
                    let value = self.fill(&s.value, Encoding::Plain);
                    match say::expand(s.say, &value.text) {
                        Some(parts) => {
                            files.extend(parts.iter().map(|f| prompt_path(&self.prompt_dir, f)))
                        }
                        None => self.note(format!(
                            "cannot say \"{}\" as {:?}; skipped",
                            value.masked, s.say
                        )),
                    }
                }
            }
        }
        let id = self.next_id();
        self.out.push_back(Action::Play {
            id,
            files,
            barge_in,
        });
        id
    }

    fn fill(&self, template: &str, encoding: Encoding) -> Filled {
        template::fill(template, encoding, |name| {
            if name == "now" {
                return Some(template::Value {
                    text: &self.now_text,
                    secure: false,
                });
            }
            self.vars.get(name).map(|v| template::Value {
                text: &v.value,
                secure: v.secure,
            })
        })
    }

    fn fill_json(&self, v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => {
                serde_json::Value::String(self.fill(s, Encoding::Plain).text)
            }
            serde_json::Value::Array(a) => a.iter().map(|x| self.fill_json(x)).collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .map(|(k, x)| (k.clone(), self.fill_json(x)))
                .collect(),
            other => other.clone(),
        }
    }

    fn var_text(&self, name: &str) -> &str {
        if name == "now" {
            return &self.now_text;
        }
        self.vars.get(name).map(|v| v.value.as_str()).unwrap_or("")
    }

    fn set_var(&mut self, name: &str, value: String, secure: bool) {
        let shown = if secure {
            MASK.to_string()
        } else {
            value.clone()
        };
        self.push(Step::Variable {
            name: name.to_string(),
            value: shown,
        });
        self.vars.insert(name.to_string(), Var { value, secure });
    }

    fn holds(&self, c: &Condition) -> bool {
        let num = |s: &str| s.trim().parse::<f64>().ok();
        match c {
            Condition::Eq(cmp) => equals(self.var_text(&cmp.var), &cmp.value),
            Condition::Ne(cmp) => !equals(self.var_text(&cmp.var), &cmp.value),
            Condition::Lt(cmp) | Condition::Le(cmp) | Condition::Gt(cmp) | Condition::Ge(cmp) => {
                let (Some(a), Literal::Number(b)) =
                    (num(self.var_text(&cmp.var)), &cmp.value.value)
                else {
                    return false;
                };
                match c {
                    Condition::Lt(_) => a < *b,
                    Condition::Le(_) => a <= *b,
                    Condition::Gt(_) => a > *b,
                    _ => a >= *b,
                }
            }
            Condition::Matches(m) => regex::Regex::new(&m.pattern.value)
                .is_ok_and(|re| re.is_match(self.var_text(&m.var))),
            Condition::In(m) => {
                let v = self.var_text(&m.var);
                m.values.iter().any(|l| equals(v, l))
            }
            Condition::All(cs) => cs.iter().all(|c| self.holds(c)),
            Condition::Any(cs) => cs.iter().any(|c| self.holds(c)),
            Condition::Not(c) => !self.holds(c),
        }
    }

    fn push(&mut self, step: Step) {
        self.trace.entries.push(TraceEntry { at: self.now, step });
    }

    fn note(&mut self, text: String) {
        self.push(Step::Note(text));
    }
}

/// Numbers compare as numbers (so "007" equals 7), everything else as text.
fn equals(var: &str, lit: &Literal) -> bool {
    match lit {
        Literal::Number(n) => var.trim().parse::<f64>().is_ok_and(|v| v == *n),
        Literal::Bool(b) => var == if *b { "true" } else { "false" },
        Literal::Text(t) => var == t,
    }
}

#[cfg(test)]
mod tests;
