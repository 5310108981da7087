//! The interpreter driven with a fake clock: every construct, its timeouts and retries,
//! HTTP failures, and the caller hanging up at every kind of step.

use super::*;
use crate::ivr::validate::{self, Options};

const T0: &str = "2026-12-31T10:00:00+03:00";

/// Parses and validates test flows (the first one is the one called), so every flow
/// the tests run is one `switchboard check` would accept.
fn flows(yamls: &[&str]) -> Arc<FlowSet> {
    let parsed: Vec<(std::path::PathBuf, Flow)> = yamls
        .iter()
        .map(|y| {
            let probe = validate::parse_flow(std::path::Path::new("t.yaml"), y)
                .unwrap_or_else(|e| panic!("{e}"));
            let path = std::path::PathBuf::from(format!("{}.yaml", probe.name.value));
            (path, probe)
        })
        .collect();
    let report = validate::check(&parsed, &Options::default());
    assert!(report.is_ok(), "test flow is invalid: {:#?}", report.errors);
    Arc::new(FlowSet::from_flows(parsed.into_iter().map(|(_, f)| f)))
}

struct Call {
    ivr: Interpreter,
    now: Timestamp,
}

impl Call {
    fn new(yamls: &[&str]) -> (Call, Vec<Action>) {
        Self::new_at(yamls, T0)
    }

    fn new_at(yamls: &[&str], at: &str) -> (Call, Vec<Action>) {
        let set = flows(yamls);
        let first = validate::parse_flow(std::path::Path::new("t.yaml"), yamls[0]).unwrap();
        let mut call = Call {
            ivr: Interpreter::new(set, &first.name.value).unwrap(),
            now: at.parse().unwrap(),
        };
        let out = call.send(Event::Started {
            caller: "+905551112233".into(),
            dialed: "100".into(),
        });
        (call, out)
    }

    fn send(&mut self, e: Event) -> Vec<Action> {
        self.ivr.handle(self.now, e);
        std::iter::from_fn(|| self.ivr.poll()).collect()
    }

    fn after(&mut self, secs: i64) -> &mut Self {
        self.now += SignedDuration::from_secs(secs);
        self
    }

    fn key(&mut self, k: char) -> Vec<Action> {
        self.send(Event::Digit(k))
    }

    fn keys(&mut self, ks: &str) -> Vec<Action> {
        ks.chars().flat_map(|k| self.key(k)).collect()
    }

    /// Jumps the clock to the armed timer and fires it.
    fn fire(&mut self) -> Vec<Action> {
        let at = self.ivr.timer().expect("a timer is armed");
        self.now = at;
        self.send(Event::Timer)
    }

    fn var(&self, name: &str) -> Option<String> {
        self.ivr.variables().get(name).cloned()
    }

    fn nodes(&self) -> Vec<String> {
        self.ivr
            .trace()
            .entries
            .iter()
            .filter_map(|e| match &e.step {
                Step::Node { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The id and files of the last `Play` in `actions`.
fn played(actions: &[Action]) -> (PlayId, Vec<String>) {
    actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Play { id, files, .. } => Some((*id, files.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Play in {actions:?}"))
}

fn finished(actions: &[Action]) -> Option<&Outcome> {
    actions.iter().find_map(|a| match a {
        Action::Finished { outcome } => Some(outcome),
        _ => None,
    })
}

fn finish_prompt(call: &mut Call, actions: &[Action]) -> Vec<Action> {
    let (id, _) = played(actions);
    call.send(Event::PromptFinished { play: id })
}

// ---- play ----

const PLAY: &str = r##"
name: p
entry: hello
prompts: en
nodes:
  hello:
    play: { prompts: [hello, "billing/intro.wav"], next: bye }
  bye:
    hangup: {}
"##;

#[test]
fn play_then_hangup() {
    let (mut call, out) = Call::new(&[PLAY]);
    assert_eq!(
        out,
        vec![Action::Play {
            id: 1,
            files: vec!["en/hello.wav".into(), "en/billing/intro.wav".into()],
            barge_in: false
        }]
    );
    assert!(call.key('1').is_empty(), "no barge-in: keys are ignored");
    assert!(
        call.send(Event::PromptFinished { play: 99 }).is_empty(),
        "a stale prompt id is ignored"
    );
    let out = finish_prompt(&mut call, &out);
    assert_eq!(
        out,
        vec![
            Action::Hangup,
            Action::Finished {
                outcome: Outcome::Completed
            }
        ]
    );
    assert!(call.ivr.is_finished());
    assert!(call.key('1').is_empty(), "nothing after the end");
    assert_eq!(call.nodes(), ["hello", "bye"]);
}

const BARGE: &str = r##"
name: b
entry: welcome
nodes:
  welcome:
    play: { prompts: [welcome], barge_in: true, next: notice }
  notice:
    play: { prompts: [notice], barge_in: true, next: menu }
  menu:
    menu:
      prompts: [menu]
      options: { "1": one, "2": two }
      on_fail: bye
  one:
    hangup: {}
  two:
    hangup: {}
  bye:
    hangup: {}
"##;

#[test]
fn barge_in_key_is_kept_for_the_next_menu() {
    let (mut call, _) = Call::new(&[BARGE]);
    let out = call.key('2');
    // The welcome stops, the notice is skipped (it would be cut anyway), and the menu
    // takes the typed-ahead key without playing its prompt.
    assert_eq!(out[0], Action::StopPlayback);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Play { .. })),
        "{out:?}"
    );
    assert_eq!(finished(&out), Some(&Outcome::Completed));
    assert_eq!(call.nodes(), ["welcome", "notice", "menu", "two"]);
}

// ---- menu ----

const MENU: &str = r##"
name: m
entry: menu
nodes:
  menu:
    menu:
      prompts: [menu]
      options: { "1": billing, "#": bye }
      timeout_secs: 4
      retries: 1
      no_input: [no_input]
      invalid: [invalid]
      on_fail: operator
  billing:
    hangup: {}
  bye:
    hangup: {}
  operator:
    transfer: { extension: "2001" }
"##;

#[test]
fn menu_key_while_prompt_plays() {
    let (mut call, out) = Call::new(&[MENU]);
    assert!(matches!(out[0], Action::Play { barge_in: true, .. }));
    let out = call.after(1).key('1');
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(finished(&out), Some(&Outcome::Completed));
    assert_eq!(call.nodes(), ["menu", "billing"]);
}

#[test]
fn menu_timeout_then_retry_then_on_fail() {
    let (mut call, out) = Call::new(&[MENU]);
    let start = call.now;
    let out = finish_prompt(&mut call, &out);
    assert_eq!(
        out,
        vec![Action::ArmTimer {
            at: start + SignedDuration::from_secs(4)
        }]
    );
    // A timer that fires early (a stale one) changes nothing.
    call.after(1);
    assert!(call.send(Event::Timer).is_empty());
    let out = call.fire();
    assert_eq!(played(&out).1, ["no_input.wav", "menu.wav"]);
    let out = finish_prompt(&mut call, &out);
    assert!(matches!(out[0], Action::ArmTimer { .. }));
    let out = call.fire();
    assert_eq!(
        out[0],
        Action::Transfer {
            to: TransferTarget::Extension("2001".into()),
            data: call.ivr.call_data()
        }
    );
    assert_eq!(finished(&out), Some(&Outcome::Transferred));
}

#[test]
fn menu_invalid_key_plays_the_invalid_prompt() {
    let (mut call, out) = Call::new(&[MENU]);
    finish_prompt(&mut call, &out);
    let out = call.key('7');
    assert_eq!(played(&out).1, ["invalid.wav", "menu.wav"]);
    let out = call.key('#');
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(call.nodes(), ["menu", "bye"]);
}

// ---- collect ----

const COLLECT: &str = r##"
name: c
entry: ask
nodes:
  ask:
    collect:
      prompts: [enter]
      variable: account
      min_digits: 4
      max_digits: 6
      first_digit_timeout_secs: 5
      inter_digit_timeout_secs: 2
      pattern: "^[1-9]"
      retries: 1
      invalid: [invalid]
      no_input: [no_input]
      next: ok
      on_fail: failed
  ok:
    hangup: {}
  failed:
    hangup: {}
"##;

#[test]
fn collect_ends_at_the_terminator() {
    let (mut call, out) = Call::new(&[COLLECT]);
    finish_prompt(&mut call, &out);
    call.keys("1234#");
    assert_eq!(call.var("account").as_deref(), Some("1234"));
    assert_eq!(call.nodes(), ["ask", "ok"]);
}

#[test]
fn collect_ends_at_max_digits() {
    let (mut call, _) = Call::new(&[COLLECT]);
    // Typed over the prompt, which stops at the first key.
    let out = call.keys("123456");
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(call.var("account").as_deref(), Some("123456"));
}

#[test]
fn collect_ends_after_an_inter_digit_pause() {
    let (mut call, out) = Call::new(&[COLLECT]);
    finish_prompt(&mut call, &out);
    let out = call.after(1).keys("98765");
    let t = call.now;
    assert_eq!(
        out.last(),
        Some(&Action::ArmTimer {
            at: t + SignedDuration::from_secs(2)
        })
    );
    call.fire();
    assert_eq!(call.var("account").as_deref(), Some("98765"));
}

#[test]
fn collect_rejects_short_and_unmatched_input_then_fails() {
    let (mut call, out) = Call::new(&[COLLECT]);
    finish_prompt(&mut call, &out);
    let out = call.keys("12#");
    assert_eq!(played(&out).1, ["invalid.wav", "enter.wav"], "too short");
    finish_prompt(&mut call, &out);
    let out = call.keys("0123#");
    assert_eq!(call.var("account"), None, "pattern wants a leading 1-9");
    assert_eq!(finished(&out), Some(&Outcome::Completed));
    assert_eq!(call.nodes(), ["ask", "failed"]);
}

/// Every key a phone has is input: `*`, `#` and the fourth column `A`-`D` too, when
/// there is no terminator.
#[test]
fn collect_takes_all_sixteen_keys_without_a_terminator() {
    let flow = r##"
name: keys
entry: ask
nodes:
  ask:
    collect:
      prompts: [enter]
      variable: keys
      max_digits: 16
      terminator: null
      next: ok
      on_fail: failed
  ok:
    hangup: {}
  failed:
    hangup: {}
"##;
    let (mut call, out) = Call::new(&[flow]);
    finish_prompt(&mut call, &out);
    call.keys("0123456789*#ABCD");
    assert_eq!(call.var("keys").as_deref(), Some("0123456789*#ABCD"));
    assert_eq!(call.nodes(), ["ask", "ok"]);
    let trace = call
        .ivr
        .trace()
        .entries
        .iter()
        .map(|e| e.step.to_string())
        .collect::<Vec<_>>();
    assert!(
        trace.iter().any(|s| s == "keys = \"0123456789*#ABCD\""),
        "{trace:#?}"
    );
}

#[test]
fn collect_no_input_retries() {
    let (mut call, out) = Call::new(&[COLLECT]);
    finish_prompt(&mut call, &out);
    let out = call.fire();
    assert_eq!(played(&out).1, ["no_input.wav", "enter.wav"]);
    finish_prompt(&mut call, &out);
    call.fire();
    assert_eq!(call.nodes(), ["ask", "failed"]);
}

const SECURE: &str = r##"
name: pay
entry: card
nodes:
  card:
    collect:
      prompts: [card]
      variable: card
      max_digits: 16
      secure: true
      next: copy
      on_fail: bye
  copy:
    set: { vars: { last_try: "card ${card}", who: "${caller}" }, next: charge }
  charge:
    http:
      method: POST
      url: "https://pay.example.com/charge?c=${card}"
      body: { card: "${card}", caller: "${caller}" }
      next: agent
      on_error: bye
  agent:
    queue: { queue: billing }
  bye:
    hangup: {}
"##;

#[test]
fn secure_collect_pauses_recording_and_masks_everything() {
    let (mut call, out) = Call::new(&[SECURE]);
    assert_eq!(out[0], Action::PauseRecording, "paused before the prompt");
    finish_prompt(&mut call, &out);
    let out = call.keys("4111111111111111");
    assert!(out.contains(&Action::ResumeRecording));
    // The real value goes to the payment service...
    let req = out
        .iter()
        .find_map(|a| match a {
            Action::HttpRequest { url, body, .. } => Some((url.clone(), body.clone().unwrap())),
            _ => None,
        })
        .unwrap();
    assert!(req.0.ends_with("c=4111111111111111"));
    assert!(req.1.contains("\"card\":\"4111111111111111\""));
    // ...but never into the trace, the variables, or the data that travels with the call.
    let trace = format!("{:?}", call.ivr.trace());
    assert!(!trace.contains("4111"), "{trace}");
    assert!(trace.contains("key (hidden)") || trace.contains("Key(None)"));
    assert_eq!(call.var("card").as_deref(), Some(MASK));
    assert_eq!(
        call.var("last_try").as_deref(),
        Some(MASK),
        "derived values stay secure"
    );
    assert_eq!(call.var("who").as_deref(), Some("+905551112233"));
    let data = call.ivr.call_data();
    assert_eq!(
        data.get("card").map(String::as_str),
        Some(MASK),
        "masked, never the value"
    );
    assert_eq!(data.get("last_try").map(String::as_str), Some(MASK));
    assert!(!format!("{data:?}").contains("4111"));
    assert!(data.contains_key("who"));
}

#[test]
fn secure_collect_resumes_recording_when_it_gives_up() {
    let (mut call, mut out) = Call::new(&[SECURE]);
    // The default is two retries: three silences in all.
    for _ in 0..3 {
        finish_prompt(&mut call, &out);
        out = call.fire();
    }
    assert!(out.contains(&Action::ResumeRecording));
    assert_eq!(finished(&out), Some(&Outcome::Completed));
}

// ---- set, branch, language, say ----

const LOGIC: &str = r##"
name: logic
entry: init
nodes:
  init:
    set: { vars: { n: "007", lang: es, tier: gold, greeting: "hi ${caller}" }, next: pick }
  pick:
    branch:
      cases:
        - when: { gt: { var: n, value: 100 } }
          then: wrong
        - when: { all: [ { eq: { var: n, value: 7 } }, { le: { var: n, value: 7 } }, { ge: { var: n, value: 7 } }, { lt: { var: n, value: 8 } } ] }
          then: second
      else: wrong
  second:
    branch:
      cases:
        - when: { any: [ { ne: { var: tier, value: gold } }, { not: { in: { var: lang, values: [es, fr] } } } ] }
          then: wrong
        - when: { matches: { var: caller, pattern: "^\\+90" } }
          then: spanish
      else: wrong
  spanish:
    language: { dir: es, next: speak }
  speak:
    play:
      prompts:
        - "${tier}_intro"
        - { say: number, value: "${n}" }
        - { say: digits, value: "${dialed}" }
        - { say: date, value: "2026-01-02" }
      next: numeric
  numeric:
    branch:
      cases:
        - when: { gt: { var: lang, value: 1 } }
          then: wrong
      else: done
  wrong:
    hangup: {}
  done:
    hangup: {}
"##;

#[test]
fn set_branch_language_and_say() {
    let (mut call, out) = Call::new(&[LOGIC]);
    assert_eq!(call.var("greeting").as_deref(), Some("hi +905551112233"));
    assert_eq!(call.var("language").as_deref(), Some("es"));
    assert_eq!(
        played(&out).1,
        [
            "es/gold_intro.wav",
            "es/numbers/7.wav",
            "es/digits/1.wav",
            "es/digits/0.wav",
            "es/digits/0.wav",
            "es/months/1.wav",
            "es/ordinals/2.wav",
            "es/numbers/2.wav",
            "es/numbers/thousand.wav",
            "es/numbers/20.wav",
            "es/numbers/6.wav",
        ]
    );
    finish_prompt(&mut call, &out);
    // "es" is not a number, so gt is false rather than an error.
    assert_eq!(
        call.nodes(),
        ["init", "pick", "second", "spanish", "speak", "numeric", "done"]
    );
}

// ---- schedule ----

const HOURS: &str = r##"
name: hours
entry: when
nodes:
  when:
    schedule:
      timezone: America/New_York
      hours: { mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"], thu: ["09:00-17:00"], fri: ["09:00-17:00"] }
      holidays: ["12-25"]
      special_days: { "2026-12-24": ["09:00-12:00"] }
      open: open
      closed: closed
  open:
    hangup: {}
  closed:
    hangup: {}
"##;

#[test]
fn schedule_follows_the_injected_clock() {
    let cases = [
        ("2026-12-31T10:00:00-05:00", "open"),   // Thursday morning
        ("2026-12-31T09:00:00+03:00", "closed"), // 01:00 in New York
        ("2027-01-02T10:00:00-05:00", "closed"), // Saturday
        ("2026-12-25T10:00:00-05:00", "closed"), // holiday
        ("2026-12-24T11:59:00-05:00", "open"),   // short day
        ("2026-12-24T12:00:00-05:00", "closed"),
    ];
    for (at, want) in cases {
        let (call, _) = Call::new_at(&[HOURS], at);
        assert_eq!(call.nodes(), ["when", want], "at {at}");
    }
}

// ---- http ----

const HTTP: &str = r##"
name: h
entry: lookup
nodes:
  lookup:
    http:
      url: "https://crm.example.com/accounts/${caller}?x=1"
      headers: { Authorization: "Bearer abc" }
      timeout_secs: 3
      save: { name: /customer/name, balance: /balance, missing: /nope, whole: /customer }
      next: found
      on_error: fallback
  found:
    hangup: {}
  fallback:
    hangup: {}
"##;

fn http_request(out: &[Action]) -> (RequestId, String) {
    out.iter()
        .find_map(|a| match a {
            Action::HttpRequest { id, url, .. } => Some((*id, url.clone())),
            _ => None,
        })
        .expect("an HttpRequest")
}

#[test]
fn http_answer_fills_variables() {
    let (mut call, out) = Call::new(&[HTTP]);
    let (id, url) = http_request(&out);
    assert_eq!(url, "https://crm.example.com/accounts/%2B905551112233?x=1");
    assert!(out.contains(&Action::ArmTimer {
        at: call.now + SignedDuration::from_secs(3)
    }));
    call.after(1);
    assert!(
        call.send(Event::HttpResult {
            request: id + 7,
            status: 200,
            body: "{}".into()
        })
        .is_empty(),
        "an answer to another request is ignored"
    );
    call.send(Event::HttpResult {
        request: id,
        status: 200,
        body: r##"{"customer": {"name": "Ada"}, "balance": 12.5}"##.into(),
    });
    assert_eq!(call.var("name").as_deref(), Some("Ada"));
    assert_eq!(call.var("balance").as_deref(), Some("12.5"));
    assert_eq!(call.var("missing").as_deref(), Some(""));
    assert_eq!(call.var("whole").as_deref(), Some(r##"{"name":"Ada"}"##));
    assert_eq!(call.nodes(), ["lookup", "found"]);
}

#[test]
fn http_failures_take_the_fallback() {
    let answers = [
        Event::HttpResult {
            request: 0,
            status: 503,
            body: "{}".into(),
        },
        Event::HttpResult {
            request: 0,
            status: 200,
            body: "<html>".into(),
        },
        Event::HttpFailed {
            request: 0,
            reason: "connection refused".into(),
        },
    ];
    for answer in answers {
        let (mut call, out) = Call::new(&[HTTP]);
        let (id, _) = http_request(&out);
        let answer = match answer {
            Event::HttpResult { status, body, .. } => Event::HttpResult {
                request: id,
                status,
                body,
            },
            Event::HttpFailed { reason, .. } => Event::HttpFailed {
                request: id,
                reason,
            },
            other => other,
        };
        call.send(answer);
        assert_eq!(call.nodes(), ["lookup", "fallback"]);
    }
}

#[test]
fn http_timeout_takes_the_fallback_and_ignores_the_late_answer() {
    let (mut call, out) = Call::new(&[HTTP]);
    let (id, _) = http_request(&out);
    call.fire();
    assert_eq!(call.nodes(), ["lookup", "fallback"]);
    let late = call.send(Event::HttpResult {
        request: id,
        status: 200,
        body: "{}".into(),
    });
    assert!(late.is_empty());
    assert_eq!(call.var("name"), None);
}

#[test]
fn http_post_sends_a_templated_json_body() {
    let y = r##"
name: post
entry: send
nodes:
  send:
    http:
      method: POST
      url: https://crm.example.com/calls
      body: { from: "${caller}", tags: [ivr, "${dialed}"], n: 1 }
      next: done
      on_error: done
  done:
    hangup: {}
"##;
    let (_, out) = Call::new(&[y]);
    let (body, headers) = out
        .iter()
        .find_map(|a| match a {
            Action::HttpRequest {
                body,
                headers,
                method: HttpMethod::Post,
                ..
            } => Some((body.clone().unwrap(), headers.clone())),
            _ => None,
        })
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"from": "+905551112233", "tags": ["ivr", "100"], "n": 1})
    );
    assert!(headers.contains(&("Content-Type".into(), "application/json".into())));
}

// ---- queue, survey, transfer, voicemail ----

const QUEUE: &str = r##"
name: q
entry: tag
nodes:
  tag:
    set: { vars: { reason: billing }, next: wait }
  wait:
    queue:
      queue: billing
      skills: { billing: 3, turkish: 1 }
      priority: 5
      next: survey
      on_fail: mailbox
  survey:
    survey:
      csat: [csat]
      resolved: [resolved]
      invalid: [invalid]
      thanks: [thanks]
      timeout_secs: 4
      retries: 1
  mailbox:
    voicemail:
      mailbox: "billing-${dialed}"
      greeting: [leave_message]
      max_secs: 60
      silence_secs: 4
      next: bye
  bye:
    hangup: {}
"##;

fn connect(call: &mut Call, out: &[Action]) {
    let Some(Action::Enqueue {
        queue,
        skills,
        priority,
        data,
    }) = out.last()
    else {
        panic!("{out:?}")
    };
    assert_eq!(queue, "billing");
    assert_eq!(
        skills,
        &[("billing".to_string(), 3), ("turkish".to_string(), 1)]
    );
    assert_eq!(*priority, 5);
    assert_eq!(data.get("reason").map(String::as_str), Some("billing"));
    assert!(call
        .send(Event::QueueResult(QueueResult::Connected {
            agent: "2002".into()
        }))
        .is_empty());
    assert!(
        call.key('5').is_empty(),
        "keys during the agent call are not the IVR's"
    );
}

#[test]
fn queue_then_survey_after_the_agent_hangs_up() {
    let (mut call, out) = Call::new(&[QUEUE]);
    connect(&mut call, &out);
    let out = call.after(300).send(Event::AgentHungUp);
    assert_eq!(played(&out).1, ["csat.wav"]);
    let out = call.key('9');
    assert_eq!(played(&out).1, ["invalid.wav", "csat.wav"], "9 is not 1-5");
    let out = call.key('4');
    assert_eq!(played(&out).1, ["resolved.wav"]);
    let out = call.key('2');
    assert_eq!(played(&out).1, ["thanks.wav"]);
    let out = finish_prompt(&mut call, &out);
    assert_eq!(
        finished(&out),
        Some(&Outcome::Completed),
        "no next: the call ends"
    );
    assert_eq!(
        call.ivr.trace().survey,
        Some(SurveyAnswers {
            csat: Some(4),
            resolved: Some(false)
        })
    );
    assert_eq!(call.var("agent").as_deref(), Some("2002"));
    assert_eq!(call.var("csat").as_deref(), Some("4"));
    assert_eq!(call.var("resolved").as_deref(), Some("no"));
}

#[test]
fn survey_without_an_answer() {
    let (mut call, out) = Call::new(&[QUEUE]);
    connect(&mut call, &out);
    let out = call.send(Event::AgentHungUp);
    finish_prompt(&mut call, &out);
    let out = call.fire();
    finish_prompt(&mut call, &out);
    let out = call.fire();
    assert_eq!(played(&out).1, ["thanks.wav"]);
    assert_eq!(
        call.ivr.trace().survey,
        Some(SurveyAnswers {
            csat: None,
            resolved: None
        })
    );
}

#[test]
fn queue_failure_goes_to_voicemail() {
    let (mut call, _) = Call::new(&[QUEUE]);
    let out = call.send(Event::QueueResult(QueueResult::Failed {
        reason: "no agents logged in".into(),
    }));
    assert_eq!(played(&out).1, ["leave_message.wav"]);
    let out = finish_prompt(&mut call, &out);
    assert_eq!(
        out,
        vec![Action::Record {
            mailbox: "billing-100".into(),
            beep: true,
            max: Duration::from_secs(60),
            silence: Duration::from_secs(4)
        }]
    );
    let out = call.after(30).send(Event::RecordingFinished {
        file: Some("voicemail/billing-100/1.wav".into()),
    });
    assert_eq!(finished(&out), Some(&Outcome::Completed));
    assert_eq!(
        call.var("voicemail_file").as_deref(),
        Some("voicemail/billing-100/1.wav")
    );
    assert_eq!(call.nodes(), ["tag", "wait", "mailbox", "bye"]);
}

#[test]
fn transfer_to_an_outside_number() {
    let y = r##"
name: t
entry: out
nodes:
  out:
    transfer: { number: "+90212${dialed}" }
"##;
    let (_, out) = Call::new(&[y]);
    assert!(matches!(
        &out[0],
        Action::Transfer { to: TransferTarget::External(n), .. } if n == "+90212100"
    ));
    assert_eq!(finished(&out), Some(&Outcome::Transferred));
}

#[test]
fn a_step_with_record_says_how_its_conversation_is_recorded_before_it_goes() {
    use crate::ivr::model::RecordMode;
    let y = r##"
name: t
entry: out
nodes:
  out:
    transfer: { extension: "2001", record: never }
"##;
    let (_, out) = Call::new(&[y]);
    assert!(matches!(
        out[0],
        Action::RecordConversation(RecordMode::Never)
    ));
    assert!(matches!(&out[1], Action::Transfer { .. }));
    let q = r##"
name: q
entry: wait
nodes:
  wait:
    queue: { queue: billing, record: on_demand }
"##;
    let (_, out) = Call::new(&[q]);
    assert!(matches!(
        out[0],
        Action::RecordConversation(RecordMode::OnDemand)
    ));
    assert!(matches!(&out[1], Action::Enqueue { .. }));
    // Without `record:` nothing is said; the queue's or the server's policy holds.
    let plain = "name: p\nentry: out\nnodes:\n  out:\n    transfer: { extension: \"2001\" }\n";
    let (_, out) = Call::new(&[plain]);
    assert!(matches!(&out[0], Action::Transfer { .. }));
}

// ---- goto ----

#[test]
fn goto_a_node_and_another_flow() {
    let a = r##"
name: a
entry: start
nodes:
  start:
    goto: { node: jump }
  jump:
    goto: { flow: b, node: middle }
"##;
    let b = r##"
name: b
entry: first
nodes:
  first:
    hangup: {}
  middle:
    play: { prompts: [in_b], next: first }
"##;
    let (mut call, out) = Call::new(&[a, b]);
    assert_eq!(played(&out).1, ["in_b.wav"]);
    assert_eq!(call.ivr.position(), ("b", "middle"));
    finish_prompt(&mut call, &out);
    assert_eq!(call.nodes(), ["start", "jump", "middle", "first"]);
}

#[test]
fn a_loop_across_flows_is_stopped() {
    let a = "name: a\nentry: x\nnodes:\n  x:\n    goto: { flow: b }\n";
    let b = "name: b\nentry: y\nnodes:\n  y:\n    goto: { flow: a }\n";
    let (_, out) = Call::new(&[a, b]);
    assert!(
        matches!(finished(&out), Some(Outcome::Failed { .. })),
        "{out:?}"
    );
    assert!(out.contains(&Action::Hangup));
}

// ---- the caller hangs up anywhere ----

/// Drives a call to a given kind of step, then hangs up.
fn hang_up_at(yamls: &[&str], to_step: impl FnOnce(&mut Call, Vec<Action>)) -> Call {
    let (mut call, out) = Call::new(yamls);
    to_step(&mut call, out);
    assert!(!call.ivr.is_finished());
    let out = call.send(Event::CallerHungUp);
    assert_eq!(
        out.last(),
        Some(&Action::Finished {
            outcome: Outcome::CallerHungUp
        }),
        "{out:?}"
    );
    assert!(!out.contains(&Action::Hangup), "the caller is already gone");
    assert!(call.ivr.is_finished());
    // Whatever arrives afterwards is ignored.
    assert!(call.key('1').is_empty());
    assert!(call.send(Event::Timer).is_empty());
    assert!(call.send(Event::AgentHungUp).is_empty());
    call
}

#[test]
fn caller_hangs_up_at_every_kind_of_step() {
    hang_up_at(&[PLAY], |_, _| {});
    hang_up_at(&[MENU], |_, _| {});
    hang_up_at(&[MENU], |c, out| {
        finish_prompt(c, &out);
    });
    hang_up_at(&[COLLECT], |c, _| {
        c.keys("12");
    });
    let call = hang_up_at(&[SECURE], |c, _| {
        c.keys("4111");
    });
    assert!(!format!("{:?}", call.ivr.trace()).contains("4111"));
    hang_up_at(&[HTTP], |_, _| {});
    hang_up_at(&[QUEUE], |_, _| {}); // waiting in the queue: an abandoned call
    hang_up_at(&[QUEUE], |c, out| connect(c, &out)); // talking to the agent
    hang_up_at(&[QUEUE], |c, out| {
        connect(c, &out);
        c.send(Event::AgentHungUp); // in the survey
    });
    hang_up_at(&[QUEUE], |c, _| {
        let out = c.send(Event::QueueResult(QueueResult::Failed {
            reason: "x".into(),
        }));
        finish_prompt(c, &out); // recording a voicemail
    });
}

#[test]
fn events_before_start_are_ignored() {
    let set = flows(&[PLAY]);
    let mut ivr = Interpreter::new(set.clone(), "p").unwrap();
    ivr.handle(T0.parse().unwrap(), Event::Digit('1'));
    ivr.handle(T0.parse().unwrap(), Event::CallerHungUp);
    assert!(ivr.poll().is_none());
    assert!(Interpreter::new(set, "nope").is_err());
}
