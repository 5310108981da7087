//! The flow language: one YAML file per flow, read into these types.
//!
//! This module owns the shape of a flow file and nothing else. It never checks meaning
//! (that is [`super::validate`]) and never runs anything (that is [`super::interpreter`]).
//! Every value an operator can get wrong is wrapped in [`At`] so the validator can say
//! `file:line:column`. The JSON Schema that editors use is generated from these types, so
//! the doc comments here are what an operator sees when hovering a key in their editor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A value and where it was written (1-based line and column; 0 when it came from a
/// default rather than the file).
///
/// Equality and order look at the value only, so `At<String>` works as a map key.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub value: T,
    pub line: u64,
    pub column: u64,
}

impl<T> At<T> {
    /// A value with no position, for defaults and for flows built in code.
    pub fn new(value: T) -> Self {
        At {
            value,
            line: 0,
            column: 0,
        }
    }
}

impl<T> Deref for At<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for At<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for At<T> {}
impl<T: Ord> PartialOrd for At<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for At<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde-saphyr fills `Spanned` from the parser; other formats cannot and fail here,
        // which is fine: flows are only ever read from YAML.
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(At {
            value: s.value,
            line: s.referenced.line(),
            column: s.referenced.column(),
        })
    }
}

impl<T: Serialize> Serialize for At<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

// The position is invisible in the file, so the schema is the wrapped value's schema.
impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// The name of a node in the same flow.
pub type Target = At<String>;

/// One IVR flow: a set of named nodes and the node a call starts at.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Switchboard IVR flow")]
pub struct Flow {
    /// The flow's name; must match the file name (`main` for `main.yaml`). Other flows
    /// reach this one with `goto: { flow: NAME }`.
    pub name: At<String>,
    /// Free text for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// The node every call starts at.
    pub entry: Target,
    /// The prompt directory calls start with, relative to the prompt root (e.g. `en`).
    /// A `language` node changes it for the rest of the call. Empty means the root itself.
    #[serde(default)]
    pub prompts: At<String>,
    /// The nodes, by name. Names are letters, digits and underscores.
    pub nodes: BTreeMap<At<String>, At<Node>>,
}

/// What a node does. Each node is a map with exactly one of these keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Play prompts, then go on.
    Play(Play),
    /// Play a prompt and go where the caller's key says.
    Menu(Menu),
    /// Gather several digits into a variable (account numbers, card numbers, PINs).
    Collect(Collect),
    /// Set variables.
    Set(Set),
    /// Go to the first case whose condition holds.
    Branch(Branch),
    /// Go to `open` or `closed` by the clock, in a given time zone.
    Schedule(Schedule),
    /// Call a web service and keep fields of its JSON answer in variables.
    Http(Http),
    /// Hand the call to an ACD queue; the caller waits for an agent.
    Queue(Queue),
    /// Send the call to an extension or an outside number. The flow ends here.
    Transfer(Transfer),
    /// Record a voice message.
    Voicemail(Voicemail),
    /// Ask the caller a keypad survey (usually after the agent hangs up).
    Survey(Survey),
    /// Switch the prompt directory (language) for the rest of the call.
    Language(Language),
    /// Jump to another node, or to another flow.
    Goto(Goto),
    /// End the call.
    Hangup(Hangup),
}

impl Node {
    /// The key that names this kind in YAML, for messages and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Play(_) => "play",
            Node::Menu(_) => "menu",
            Node::Collect(_) => "collect",
            Node::Set(_) => "set",
            Node::Branch(_) => "branch",
            Node::Schedule(_) => "schedule",
            Node::Http(_) => "http",
            Node::Queue(_) => "queue",
            Node::Transfer(_) => "transfer",
            Node::Voicemail(_) => "voicemail",
            Node::Survey(_) => "survey",
            Node::Language(_) => "language",
            Node::Goto(_) => "goto",
            Node::Hangup(_) => "hangup",
        }
    }

    /// Whether the node waits for the caller (keys, speech, an agent) before moving on.
    /// A cycle of nodes none of which waits would spin forever, so the validator rejects it.
    pub fn waits_for_caller(&self) -> bool {
        matches!(
            self,
            Node::Menu(_)
                | Node::Collect(_)
                | Node::Survey(_)
                | Node::Queue(_)
                | Node::Voicemail(_)
        )
    }

    /// Every node in the same flow this node can go to, labelled by the key that names it.
    pub fn targets(&self) -> Vec<(String, &Target)> {
        let mut out: Vec<(String, &Target)> = Vec::new();
        match self {
            Node::Play(p) => out.push(("next".into(), &p.next)),
            Node::Menu(m) => {
                for (key, t) in &m.options {
                    out.push((format!("option \"{}\"", key.value), t));
                }
                out.push(("on_fail".into(), &m.on_fail));
            }
            Node::Collect(c) => {
                out.push(("next".into(), &c.next));
                out.push(("on_fail".into(), &c.on_fail));
            }
            Node::Set(s) => out.push(("next".into(), &s.next)),
            Node::Branch(b) => {
                for (i, case) in b.cases.iter().enumerate() {
                    out.push((format!("case {}", i + 1), &case.then));
                }
                out.push(("else".into(), &b.otherwise));
            }
            Node::Schedule(s) => {
                out.push(("open".into(), &s.open));
                out.push(("closed".into(), &s.closed));
            }
            Node::Http(h) => {
                out.push(("next".into(), &h.next));
                out.push(("on_error".into(), &h.on_error));
            }
            Node::Queue(q) => {
                if let Some(t) = &q.next {
                    out.push(("next".into(), t));
                }
                if let Some(t) = &q.on_fail {
                    out.push(("on_fail".into(), t));
                }
            }
            Node::Voicemail(v) => {
                if let Some(t) = &v.next {
                    out.push(("next".into(), t));
                }
            }
            Node::Survey(s) => {
                if let Some(t) = &s.next {
                    out.push(("next".into(), t));
                }
            }
            Node::Language(l) => out.push(("next".into(), &l.next)),
            Node::Goto(g) => {
                // A goto into another flow names a node of that flow, not of this one.
                if g.flow.is_none() {
                    if let Some(t) = &g.node {
                        out.push(("goto".into(), t));
                    }
                }
            }
            Node::Transfer(_) | Node::Hangup(_) => {}
        }
        out
    }

    /// Every prompt the node can play, for the missing-file check.
    pub fn prompts(&self) -> Vec<&At<Prompt>> {
        let lists: Vec<&Vec<At<Prompt>>> = match self {
            Node::Play(p) => vec![&p.prompts],
            Node::Menu(m) => vec![&m.prompts, &m.no_input, &m.invalid],
            Node::Collect(c) => vec![&c.prompts, &c.no_input, &c.invalid],
            Node::Voicemail(v) => vec![&v.greeting],
            Node::Survey(s) => {
                let mut l = vec![&s.csat, &s.invalid, &s.thanks];
                if let Some(r) = &s.resolved {
                    l.push(r);
                }
                l
            }
            _ => vec![],
        };
        lists.into_iter().flatten().collect()
    }
}

/// Something to play: a file name, or a value said with the prompt set.
///
/// A file name is relative to the call's prompt directory; `.wav` is added when the name
/// has no extension. It may use `${variables}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// A recorded prompt, e.g. `welcome` or `billing/intro.wav`.
    File(String),
    /// Say a value using the prompt set (`digits/`, `numbers/`, `months/`, `ordinals/`).
    Say(Say),
}

/// `say: number|digits|date` with the value to say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// How to say it.
    pub say: SayKind,
    /// What to say, usually a variable: `${balance}`.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SayKind {
    /// A whole number, "one hundred twenty three".
    Number,
    /// Digit by digit, "one two three".
    Digits,
    /// A date written YYYY-MM-DD, "December thirty-first, two thousand twenty six".
    Date,
}

// By hand rather than `untagged`: an untagged enum buffers its input, and serde's buffer
// cannot carry positions, and its only error is "did not match any variant".
impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prompt file name, or { say: number|digits|date, value: ... }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt::File(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Prompt, E> {
                Ok(Prompt::File(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Prompt, A::Error> {
                Say::deserialize(de::value::MapAccessDeserializer::new(map)).map(Prompt::Say)
            }
        }
        d.deserialize_any(PromptVisitor)
    }
}

/// `play`: play prompts one after another, then go to `next`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Play {
    pub prompts: Vec<At<Prompt>>,
    /// Let a key press cut the prompts short. The key is kept for the next menu or collect,
    /// so callers who know the menu can type ahead.
    #[serde(default)]
    pub barge_in: bool,
    pub next: Target,
}

/// `menu`: play the prompt and wait for one key. The caller may press a key while the
/// prompt is still playing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    pub prompts: Vec<At<Prompt>>,
    /// Key (`0`-`9`, `*`, `#`) → node.
    #[schemars(extend("propertyNames" = { "pattern": "^[0-9*#]$" }))]
    pub options: BTreeMap<At<String>, Target>,
    /// Seconds to wait for a key after the prompt ends.
    #[serde(default = "default_timeout")]
    pub timeout_secs: At<u32>,
    /// How many more times to ask after no key or a wrong key.
    #[serde(default = "default_retries")]
    pub retries: At<u32>,
    /// Played before asking again when the caller pressed nothing.
    #[serde(default)]
    pub no_input: Vec<At<Prompt>>,
    /// Played before asking again when the caller pressed a key that is not an option.
    #[serde(default)]
    pub invalid: Vec<At<Prompt>>,
    /// Where to go after the last retry fails.
    pub on_fail: Target,
}

/// `collect`: gather digits into a variable.
///
/// Input ends at the terminator key, at `max_digits`, or when the caller pauses longer
/// than `inter_digit_timeout_secs`. It is then checked against `min_digits` and `pattern`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Collect {
    pub prompts: Vec<At<Prompt>>,
    /// The variable that receives the digits (without the terminator).
    pub variable: At<String>,
    #[serde(default = "default_min_digits")]
    pub min_digits: At<u32>,
    pub max_digits: At<u32>,
    /// The key that ends input early; `null` for none.
    #[serde(default = "default_terminator")]
    pub terminator: Option<At<String>>,
    /// Seconds to wait for the first digit after the prompt ends.
    #[serde(default = "default_timeout")]
    pub first_digit_timeout_secs: At<u32>,
    /// Seconds to wait between digits.
    #[serde(default = "default_inter_digit")]
    pub inter_digit_timeout_secs: At<u32>,
    /// A regular expression the whole input must match, e.g. `^[0-9]{6}$`.
    #[serde(default)]
    pub pattern: Option<At<String>>,
    #[serde(default = "default_retries")]
    pub retries: At<u32>,
    #[serde(default)]
    pub no_input: Vec<At<Prompt>>,
    #[serde(default)]
    pub invalid: Vec<At<Prompt>>,
    /// Card numbers, PINs: the digits are masked in traces and records, and call recording
    /// is paused while collecting (PCI-DSS).
    #[serde(default)]
    pub secure: bool,
    pub next: Target,
    pub on_fail: Target,
}

/// `set`: give variables values (templates such as `${caller}` allowed).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub vars: BTreeMap<At<String>, At<String>>,
    pub next: Target,
}

/// `branch`: the first case whose `when` holds decides; otherwise `else`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub cases: Vec<Case>,
    #[serde(rename = "else")]
    pub otherwise: Target,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub when: At<Condition>,
    pub then: Target,
}

/// A test on variables. A variable that was never set reads as the empty string.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Equal: as numbers when both sides are numbers, otherwise as text.
    Eq(Compare),
    /// Not equal.
    Ne(Compare),
    /// Less than (numbers only; a variable that is not a number makes it false).
    Lt(Compare),
    /// Less than or equal (numbers only).
    Le(Compare),
    /// Greater than (numbers only).
    Gt(Compare),
    /// Greater than or equal (numbers only).
    Ge(Compare),
    /// The variable matches a regular expression (anywhere, unless anchored with ^ and $).
    Matches(Matches),
    /// The variable equals one of the values.
    In(Membership),
    /// Every condition holds.
    All(Vec<At<Condition>>),
    /// At least one condition holds.
    Any(Vec<At<Condition>>),
    /// The condition does not hold.
    Not(Box<At<Condition>>),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// Variable name, without `${}`.
    pub var: At<String>,
    pub value: At<Literal>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Matches {
    pub var: At<String>,
    pub pattern: At<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub var: At<String>,
    pub values: Vec<At<Literal>>,
}

/// A constant in a condition, typed as written: `5` is a number, `"5"` and `abc` are text.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Literal {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LiteralVisitor;
        impl Visitor<'_> for LiteralVisitor {
            type Value = Literal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, true/false, or text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Literal, E> {
                Ok(Literal::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Literal, E> {
                Ok(Literal::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Literal, E> {
                Ok(Literal::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Literal, E> {
                Ok(Literal::Number(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Literal, E> {
                Ok(Literal::Bool(v))
            }
        }
        d.deserialize_any(LiteralVisitor)
    }
}

/// `schedule`: open or closed by the wall clock of a time zone.
///
/// A date in `holidays` is closed all day. A date in `special_days` uses its own hours
/// (an empty list is closed). Otherwise the weekday's hours apply, or `daily` when the
/// weekday is not listed. A day with no hours at all is closed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone name, e.g. `Europe/Istanbul`, `America/New_York`, `UTC`.
    pub timezone: At<String>,
    /// Opening hours per weekday, each range `HH:MM-HH:MM` (end may be `24:00`).
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "daily"] }))]
    pub hours: BTreeMap<At<Day>, Vec<At<String>>>,
    /// Closed dates: `YYYY-MM-DD`, or `MM-DD` for every year.
    #[serde(default)]
    pub holidays: Vec<At<String>>,
    /// Dates with their own hours (`YYYY-MM-DD` or `MM-DD` → ranges).
    #[serde(default)]
    pub special_days: BTreeMap<At<String>, Vec<At<String>>>,
    pub open: Target,
    pub closed: Target,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
    /// Every weekday not listed on its own.
    Daily,
}

/// `http`: call a web service (account lookup, CRM data).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default)]
    pub method: HttpMethod,
    /// `http://` or `https://` URL; `${variables}` are URL-encoded when filled in.
    pub url: At<String>,
    /// Header name → value (templates allowed).
    #[serde(default)]
    pub headers: BTreeMap<String, At<String>>,
    /// JSON body for POST; strings inside it may use `${variables}`.
    #[serde(default)]
    pub body: Option<At<serde_json::Value>>,
    /// Give up after this many seconds and go to `on_error`.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: At<u32>,
    /// Variable → JSON pointer into the answer, e.g. `balance: /account/balance`.
    #[serde(default)]
    pub save: BTreeMap<At<String>, At<String>>,
    /// After a 2xx answer with a JSON body.
    pub next: Target,
    /// After a failure, a timeout, a non-2xx status or a body that is not JSON.
    pub on_error: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum HttpMethod {
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post")]
    Post,
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        })
    }
}

/// Whether the conversation a `queue` or `transfer` step leads to is recorded;
/// overrides the queue's, the DID's and the server's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    Always,
    Never,
    /// When the agent presses the recording keys.
    OnDemand,
}

/// `queue`: wait for an agent in an ACD queue. The call's variables go with it
/// (screen pop), except secure ones.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// The queue's name in the ACD configuration.
    pub queue: At<String>,
    /// Skill → minimum level (1-10) the agent must have.
    #[serde(default)]
    pub skills: BTreeMap<At<String>, At<u8>>,
    /// Higher is answered sooner; callers of equal priority wait in arrival order.
    #[serde(default)]
    pub priority: At<i32>,
    /// Where the caller goes when the agent hangs up (e.g. a survey); none ends the call.
    #[serde(default)]
    pub next: Option<Target>,
    /// Where to go when the queue cannot take the call or gives up; none ends the call.
    #[serde(default)]
    pub on_fail: Option<Target>,
    /// Record the conversation with the agent: always, never or on_demand.
    #[serde(default)]
    pub record: Option<RecordMode>,
}

/// `transfer`: to an extension or an outside number (exactly one). The flow ends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// A user's extension, e.g. `"2001"`.
    #[serde(default)]
    pub extension: Option<At<String>>,
    /// An outside number dialled through a trunk, e.g. `"+902125550100"` (templates allowed).
    #[serde(default)]
    pub number: Option<At<String>>,
    /// Record the conversation: always, never or on_demand.
    #[serde(default)]
    pub record: Option<RecordMode>,
}

/// `voicemail`: record a message into the data directory, linked from the call record.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Voicemail {
    /// Which mailbox the message belongs to (templates allowed).
    #[serde(default = "default_mailbox")]
    pub mailbox: At<String>,
    /// Played before recording.
    #[serde(default)]
    pub greeting: Vec<At<Prompt>>,
    /// Beep before recording starts.
    #[serde(default = "default_true")]
    pub beep: bool,
    /// Longest message, in seconds.
    #[serde(default = "default_voicemail_max")]
    pub max_secs: At<u32>,
    /// Stop after this many seconds of silence.
    #[serde(default = "default_silence")]
    pub silence_secs: At<u32>,
    /// Where to go after recording; none ends the call.
    #[serde(default)]
    pub next: Option<Target>,
}

/// `survey`: a keypad CSAT question (1-5) and optionally "was your issue resolved? 1 yes
/// 2 no". Answers go into the variables `csat` and `resolved` and the call record.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Survey {
    /// The satisfaction question; the caller answers 1 (worst) to 5 (best).
    pub csat: Vec<At<Prompt>>,
    /// The "was your issue resolved?" question (1 yes, 2 no); omit to skip it.
    #[serde(default)]
    pub resolved: Option<Vec<At<Prompt>>>,
    /// Played before asking again after a wrong key or silence.
    #[serde(default)]
    pub invalid: Vec<At<Prompt>>,
    /// Played at the end.
    #[serde(default)]
    pub thanks: Vec<At<Prompt>>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: At<u32>,
    #[serde(default = "default_survey_retries")]
    pub retries: At<u32>,
    /// Where to go afterwards; none ends the call.
    #[serde(default)]
    pub next: Option<Target>,
}

/// `language`: use another prompt directory from here on (also sets `${language}`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// Directory under the prompt root, e.g. `es`.
    pub dir: At<String>,
    pub next: Target,
}

/// `goto`: a node of this flow (`node`), or another flow (`flow`, at its entry unless
/// `node` is given).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Goto {
    #[serde(default)]
    pub node: Option<Target>,
    #[serde(default)]
    pub flow: Option<At<String>>,
}

/// `hangup`: end the call. Write `hangup: {}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hangup {}

fn default_timeout() -> At<u32> {
    At::new(5)
}
fn default_inter_digit() -> At<u32> {
    At::new(3)
}
fn default_retries() -> At<u32> {
    At::new(2)
}
fn default_survey_retries() -> At<u32> {
    At::new(1)
}
fn default_min_digits() -> At<u32> {
    At::new(1)
}
fn default_terminator() -> Option<At<String>> {
    Some(At::new("#".into()))
}
fn default_http_timeout() -> At<u32> {
    At::new(5)
}
fn default_mailbox() -> At<String> {
    At::new("general".into())
}
fn default_true() -> bool {
    true
}
fn default_voicemail_max() -> At<u32> {
    At::new(120)
}
fn default_silence() -> At<u32> {
    At::new(5)
}

impl<T: Default> Default for At<T> {
    fn default() -> Self {
        At::new(T::default())
    }
}

/// The JSON Schema of a flow file, as committed in `schemas/ivr-flow.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Flow);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

/// Where the committed schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/ivr-flow.schema.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = json_schema();
        // Regenerating is opt-in so an ordinary test run never rewrites tracked files.
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("write the schema");
            return;
        }
        assert!(
            committed == generated,
            "{SCHEMA_PATH} is out of date with src/ivr/model.rs; regenerate it with\n    \
             UPDATE_SCHEMA=1 cargo test --lib ivr::model"
        );
    }

    #[test]
    fn prompt_is_a_name_or_a_say() {
        let y = "- welcome\n- { say: digits, value: \"${account}\" }\n";
        let p: Vec<At<Prompt>> = serde_saphyr::from_str(y).unwrap();
        assert_eq!(p[0].value, Prompt::File("welcome".into()));
        assert_eq!(
            p[1].value,
            Prompt::Say(Say {
                say: SayKind::Digits,
                value: "${account}".into()
            })
        );
        assert_eq!((p[1].line, p[1].column), (2, 3));
    }

    #[test]
    fn hangup_may_be_written_empty() {
        for y in ["hangup: {}\n", "hangup:\n"] {
            let n: Node = serde_saphyr::from_str(y).unwrap();
            assert_eq!(n.kind(), "hangup");
        }
    }

    #[test]
    fn literal_keeps_the_written_type() {
        let l: Vec<Literal> = serde_saphyr::from_str("[5, \"5\", abc, true]").unwrap();
        assert_eq!(
            l,
            vec![
                Literal::Number(5.0),
                Literal::Text("5".into()),
                Literal::Text("abc".into()),
                Literal::Bool(true)
            ]
        );
    }
}
