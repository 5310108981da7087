//! A scripted day of events on a simulated clock, and every KPI checked against a hand
//! computation from the script (in the comments beside each assertion).

use super::*;
use crate::events::Event;

/// 2026-12-01T09:00:00Z, 10:00 in Paris.
const T0: i64 = 1_796_115_600_000;
const DAY: i64 = 86_400_000;

#[derive(Default)]
struct Script {
    events: Vec<Event>,
}

impl Script {
    fn at(
        &mut self,
        secs: i64,
        kind: &str,
        call: Option<&str>,
        agent: Option<&str>,
        queue: Option<&str>,
        data: serde_json::Value,
    ) {
        self.at_ms(T0 + secs * 1000, kind, call, agent, queue, data);
    }

    fn at_ms(
        &mut self,
        at_ms: i64,
        kind: &str,
        call: Option<&str>,
        agent: Option<&str>,
        queue: Option<&str>,
        data: serde_json::Value,
    ) {
        let seq = self.events.len() as u64 + 1;
        self.events.push(Event {
            seq,
            at_ms,
            kind: kind.to_string(),
            call: call.map(str::to_string),
            queue: queue.map(str::to_string),
            agent: agent.map(str::to_string),
            data,
        });
    }

    fn state(&mut self, secs: i64, agent: &str, state: &str, reason: Option<&str>) {
        self.at(
            secs,
            "agent.state",
            None,
            Some(agent),
            None,
            serde_json::json!({ "state": state, "reason": reason }),
        );
    }

    fn arrive(&mut self, secs: i64, call: &str, caller: &str, did: &str, flow: Option<&str>) {
        self.at(
            secs,
            "call.arrived",
            Some(call),
            None,
            None,
            serde_json::json!({ "caller": caller, "did": did }),
        );
        if let Some(flow) = flow {
            self.at(
                secs,
                "ivr.step",
                Some(call),
                None,
                None,
                serde_json::json!({ "flow": flow, "node": "start" }),
            );
        }
    }

    fn enter(&mut self, secs: i64, call: &str, queue: &str) {
        self.at(
            secs,
            "queue.entered",
            Some(call),
            None,
            Some(queue),
            serde_json::json!({}),
        );
    }

    fn leave(
        &mut self,
        secs: i64,
        call: &str,
        queue: &str,
        kind: &str,
        agent: Option<&str>,
        wait: i64,
    ) {
        self.at(
            secs,
            kind,
            Some(call),
            agent,
            Some(queue),
            serde_json::json!({ "wait_ms": wait * 1000 }),
        );
    }

    fn complete(&mut self, secs: i64, call: &str, queue: &str, agent: &str, talk: i64) {
        self.at(
            secs,
            "queue.completed",
            Some(call),
            Some(agent),
            Some(queue),
            serde_json::json!({ "talk_ms": talk * 1000 }),
        );
    }

    fn wrap_up_ended(&mut self, secs: i64, call: &str, queue: &str, agent: &str, acw: i64) {
        self.at(
            secs,
            "agent.wrap_up_ended",
            Some(call),
            Some(agent),
            Some(queue),
            serde_json::json!({ "talk_ms": acw * 1000 }),
        );
    }

    fn disposition(&mut self, secs: i64, call: &str, code: &str, resolved: bool) {
        self.at(
            secs,
            "call.disposition",
            Some(call),
            None,
            None,
            serde_json::json!({ "code": code, "resolved": resolved }),
        );
    }

    fn survey(&mut self, secs: i64, call: &str, csat: i64) {
        self.at(
            secs,
            "call.survey",
            Some(call),
            None,
            None,
            serde_json::json!({ "csat": csat }),
        );
    }

    fn end(&mut self, secs: i64, call: &str) {
        self.at(
            secs,
            "call.ended",
            Some(call),
            None,
            None,
            serde_json::json!({}),
        );
    }
}

/// The day (seconds from T0):
/// - A 555-1 billing 5, answered by 2001 at 12 (wait 7), hold 40–60, done 112 (talk
///   100 with hold), wrap-up 10; resolved, survey 5.
/// - B 555-2 billing 30, abandons at 33 (3 s: short).
/// - C 555-3 billing 100, abandons at 140 (40 s).
/// - D 555-4 support 200, answered by 2002 at 425 (wait 225), 2002 transfers it to
///   billing at 725 (talk 300), wrap-up 10; billing 726, answered by 2001 at 1510 (wait
///   784), done 1570 (talk 60), wrap-up 5; follow_up (unresolved), survey 2.
/// - E 555-1 again (A's caller, inside the FCR window) support 1000, abandons at 1010.
/// - F 555-5 on DID 200 billing 1900, overflows at 2000 (wait 100) into support,
///   answered by 2002 at 2015 (wait 15), done 2135 (talk 120), wrap-up 20; resolved.
/// - G 555-6 on DID 200 support 3000, asks for a callback at 3010; 2002 takes it at
///   3100 (wait 100), done 3160 (talk 60), wrap-up 0. Calls again 8 days later
///   (outside the window).
/// - I billing 3590, still waiting at the end of the range: not counted.
/// - The server stops at 3400 and starts again at 3450.
fn day() -> Vec<Event> {
    let mut s = Script::default();
    s.state(0, "2001", "ready", None);
    s.state(0, "2002", "ready", None);
    s.arrive(0, "A", "555-1", "100", Some("main"));
    s.enter(5, "A", "billing");
    s.state(10, "2001", "ringing", None);
    s.state(12, "2001", "on_call", None);
    s.leave(12, "A", "billing", "queue.answered", Some("2001"), 7);
    s.arrive(28, "B", "555-2", "100", Some("main"));
    s.enter(30, "B", "billing");
    s.leave(33, "B", "billing", "queue.abandoned", None, 3);
    s.end(33, "B");
    s.at(
        40,
        "call.held",
        Some("A"),
        Some("2001"),
        None,
        serde_json::json!({}),
    );
    s.at(
        60,
        "call.resumed",
        Some("A"),
        Some("2001"),
        None,
        serde_json::json!({}),
    );
    s.arrive(95, "C", "555-3", "100", Some("main"));
    s.state(100, "2002", "not_ready", Some("break"));
    s.enter(100, "C", "billing");
    s.complete(112, "A", "billing", "2001", 100);
    s.state(112, "2001", "wrap_up", None);
    s.survey(112, "A", 5);
    s.end(112, "A");
    s.wrap_up_ended(122, "A", "billing", "2001", 10);
    s.state(122, "2001", "ready", None);
    s.disposition(120, "A", "resolved", true);
    s.leave(140, "C", "billing", "queue.abandoned", None, 40);
    s.end(140, "C");
    s.arrive(190, "D", "555-4", "100", Some("main"));
    s.enter(200, "D", "support");
    s.state(400, "2002", "ready", None);
    s.state(420, "2002", "ringing", None);
    s.state(425, "2002", "on_call", None);
    s.leave(425, "D", "support", "queue.answered", Some("2002"), 225);
    s.state(600, "2001", "not_ready", Some("lunch"));
    s.at(
        725,
        "call.transferred",
        Some("D"),
        Some("2002"),
        None,
        serde_json::json!({ "from": "2002", "to": "billing" }),
    );
    s.complete(725, "D", "support", "2002", 300);
    s.state(725, "2002", "wrap_up", None);
    s.enter(726, "D", "billing");
    s.wrap_up_ended(735, "D", "support", "2002", 10);
    s.state(735, "2002", "ready", None);
    s.arrive(995, "E", "555-1", "100", Some("main"));
    s.enter(1000, "E", "support");
    s.leave(1010, "E", "support", "queue.abandoned", None, 10);
    s.end(1010, "E");
    s.state(1500, "2001", "ready", None);
    s.state(1505, "2001", "ringing", None);
    s.state(1510, "2001", "on_call", None);
    s.leave(1510, "D", "billing", "queue.answered", Some("2001"), 784);
    s.complete(1570, "D", "billing", "2001", 60);
    s.state(1570, "2001", "wrap_up", None);
    s.survey(1570, "D", 2);
    s.end(1570, "D");
    s.wrap_up_ended(1575, "D", "billing", "2001", 5);
    s.state(1575, "2001", "ready", None);
    s.disposition(1574, "D", "follow_up", false);
    s.arrive(1890, "F", "555-5", "200", None);
    s.enter(1900, "F", "billing");
    s.leave(2000, "F", "billing", "queue.overflowed", None, 100);
    s.enter(2000, "F", "support");
    s.state(2010, "2002", "ringing", None);
    s.state(2015, "2002", "on_call", None);
    s.leave(2015, "F", "support", "queue.answered", Some("2002"), 15);
    s.complete(2135, "F", "support", "2002", 120);
    s.state(2135, "2002", "wrap_up", None);
    s.end(2135, "F");
    s.disposition(2140, "F", "resolved", true);
    s.wrap_up_ended(2155, "F", "support", "2002", 20);
    s.state(2155, "2002", "ready", None);
    s.arrive(2990, "G", "555-6", "200", None);
    s.enter(3000, "G", "support");
    s.at(
        3010,
        "queue.callback_requested",
        Some("G"),
        None,
        Some("support"),
        serde_json::json!({ "wait_ms": 10_000 }),
    );
    s.state(3095, "2002", "ringing", None);
    s.state(3100, "2002", "on_call", None);
    s.leave(
        3100,
        "G",
        "support",
        "queue.callback_answered",
        Some("2002"),
        100,
    );
    s.complete(3160, "G", "support", "2002", 60);
    s.state(3160, "2002", "wrap_up", None);
    s.end(3160, "G");
    s.wrap_up_ended(3160, "G", "support", "2002", 0);
    s.state(3160, "2002", "ready", None);
    s.state(3300, "2002", "logged_out", None);
    s.at(
        3400,
        "server.stopped",
        None,
        None,
        None,
        serde_json::json!({}),
    );
    s.at(
        3450,
        "server.started",
        None,
        None,
        None,
        serde_json::json!({}),
    );
    s.state(3450, "2001", "ready", None);
    s.arrive(3585, "I", "555-7", "100", Some("main"));
    s.enter(3590, "I", "billing");
    // After the range: G's caller 8 days on, outside the 7-day window.
    s.at_ms(
        T0 + 8 * DAY + 100_000,
        "call.arrived",
        Some("J"),
        None,
        None,
        serde_json::json!({ "caller": "555-6", "did": "200" }),
    );
    s.events
}

fn rules() -> Rules {
    let mut rules = Rules::default();
    rules.queue_targets.insert(
        "support".into(),
        Target {
            within_ms: 30_000,
            share: 0.8,
        },
    );
    rules
}

fn request(by: By, interval: Option<Interval>) -> Request {
    Request {
        from_ms: T0,
        to_ms: T0 + 3_600_000,
        by,
        interval,
        tz: time_zone("Europe/Paris").unwrap(),
        rules: rules(),
    }
}

fn row<'a>(r: &'a Report, key: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no row {key}: {r:#?}"))
}

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a figure");
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn every_queue_kpi_equals_the_hand_computation() {
    let r = compute(&day(), &request(By::Queue, None));
    let b = &row(&r, "billing").figures;
    // Billing: A, B, C, D (second visit), F (first visit); I is still waiting.
    assert_eq!((b.offered, b.answered, b.answered_within), (5, 2, 1));
    assert_eq!(
        (b.abandoned, b.short_abandoned, b.overflowed, b.callbacks),
        (2, 1, 1, 0)
    );
    // Short abandon B leaves the denominators: 1 answered in 20 s of 4.
    close(b.service_level, 0.25);
    close(b.service_levels.offered, 0.25);
    close(b.service_levels.answered, 0.5);
    close(b.service_levels.answered_or_abandoned, 1.0 / 3.0);
    close(b.service_levels.abandons_met, 0.25);
    close(b.abandon_rate, 0.25);
    close(b.asa_secs, (7.0 + 784.0) / 2.0);
    close(b.longest_wait_secs, 784.0);
    close(b.average_abandon_secs, 40.0);
    assert_eq!(b.handled, 2);
    // A: 80 talk + 20 hold + 10 wrap-up; D: 60 talk + 5 wrap-up.
    close(b.aht_secs, (110.0 + 65.0) / 2.0);
    close(b.talk_secs, 70.0);
    close(b.hold_secs, 10.0);
    close(b.acw_secs, 7.5);
    assert_eq!((b.transfers, b.agents), (0, 1));
    close(b.calls_per_agent, 2.0);
    // A resolved, D follow-up; A's caller called again (E) within 7 days.
    assert_eq!((b.dispositioned, b.resolved, b.repeat_contacts), (2, 1, 1));
    close(b.fcr_by_disposition, 0.5);
    close(b.fcr_by_repeat, 0.5);
    // Surveys 5 and 2: one satisfied.
    assert_eq!((b.survey_responses, b.satisfied), (2, 1));
    close(b.csat, 0.5);
    close(b.csat_average, 3.5);
    close(b.survey_response_rate, 1.0);

    let s = &row(&r, "support").figures;
    // Support: D (first visit), E, F (after overflow), G (callback); 30 s target.
    assert_eq!((s.offered, s.answered, s.answered_within), (4, 3, 1));
    assert_eq!((s.abandoned, s.short_abandoned, s.callbacks), (1, 0, 1));
    close(s.service_level, 0.25);
    close(s.service_levels.answered, 1.0 / 3.0);
    close(s.service_levels.answered_or_abandoned, 0.25);
    // E gave up after 10 s, inside the 30 s threshold.
    close(s.service_levels.abandons_met, 0.5);
    close(s.asa_secs, (225.0 + 15.0 + 100.0) / 3.0);
    close(s.longest_wait_secs, 225.0);
    close(s.average_abandon_secs, 10.0);
    assert_eq!(s.handled, 3);
    close(s.aht_secs, (310.0 + 140.0 + 60.0) / 3.0);
    close(s.acw_secs, 10.0);
    // D was transferred by 2002 out of support: one transfer in three handled calls.
    assert_eq!(s.transfers, 1);
    close(s.transfers_per_call, 1.0 / 3.0);
    // Per-call results: D's belong to billing (its last handled visit); F resolved; G
    // none. G's caller called again, but after the window.
    assert_eq!((s.dispositioned, s.resolved, s.repeat_contacts), (1, 1, 0));
    close(s.fcr_by_repeat, 1.0);
    assert_eq!(s.survey_responses, 0);
    assert_eq!(s.csat, None);
    close(s.survey_response_rate, 0.0);

    let t = &r.total.figures;
    assert_eq!((t.offered, t.answered, t.handled), (9, 5, 5));
}

#[test]
fn every_agent_kpi_and_time_equals_the_hand_computation() {
    let r = compute(&day(), &request(By::Agent, None));
    let a = row(&r, "2001");
    assert_eq!((a.figures.handled, a.figures.answered), (2, 2));
    close(a.figures.aht_secs, 87.5);
    close(a.figures.asa_secs, 395.5);
    close(a.figures.fcr_by_disposition, 0.5);
    close(a.figures.csat, 0.5);
    let t = a.time.as_ref().unwrap();
    // Ready 0–10, 122–600, 1500–1505, 1575–3400 (stop), 3450–3600.
    assert_eq!(t.ready_secs, 10.0 + 478.0 + 5.0 + 1825.0 + 150.0);
    assert_eq!(
        (t.ringing_secs, t.on_call_secs, t.wrap_up_secs),
        (7.0, 160.0, 15.0)
    );
    assert_eq!(t.not_ready_secs, 900.0);
    assert_eq!(t.not_ready_by_reason.get("lunch"), Some(&900.0));
    // The 50 s the server was down are nobody's time.
    assert_eq!(t.logged_in_secs, 3550.0);
    close(t.occupancy, 175.0 / 2650.0);
    close(t.utilisation, 175.0 / 3550.0);

    let b = row(&r, "2002");
    assert_eq!(b.figures.handled, 3);
    close(b.figures.aht_secs, 170.0);
    close(b.figures.transfers_per_call, 1.0 / 3.0);
    let t = b.time.as_ref().unwrap();
    assert_eq!(t.ready_secs, 100.0 + 20.0 + 1275.0 + 940.0 + 140.0);
    assert_eq!(t.not_ready_by_reason.get("break"), Some(&300.0));
    assert_eq!(
        (t.ringing_secs, t.on_call_secs, t.wrap_up_secs),
        (15.0, 480.0, 30.0)
    );
    assert_eq!(t.logged_in_secs, 3300.0);
    close(t.occupancy, 510.0 / 3000.0);
}

#[test]
fn fifteen_minute_intervals_on_the_local_clock() {
    let r = compute(&day(), &request(By::Queue, Some(Interval::Quarter)));
    let at = |key: &str, start: &str| {
        r.rows
            .iter()
            .find(|r| r.key == key && r.interval.as_deref() == Some(start))
            .unwrap_or_else(|| panic!("no row {key} {start}: {:#?}", r.rows))
            .figures
            .clone()
    };
    // T0 is 10:00 in Paris. Billing: A, B, C, D at 10:00; F at 10:30 (1900 s).
    let b10 = at("billing", "2026-12-01T10:00:00+01:00");
    assert_eq!((b10.offered, b10.answered, b10.short_abandoned), (4, 2, 1));
    close(b10.service_level, 1.0 / 3.0);
    close(b10.aht_secs, 87.5);
    let b1030 = at("billing", "2026-12-01T10:30:00+01:00");
    assert_eq!((b1030.offered, b1030.overflowed), (1, 1));
    close(b1030.service_level, 0.0);
    // Support: D 10:00, E 10:15, F 10:30, G 10:45.
    for (start, answered) in [("10:00", 1), ("10:15", 0), ("10:30", 1), ("10:45", 1)] {
        let f = at("support", &format!("2026-12-01T{start}:00+01:00"));
        assert_eq!((f.offered, f.answered), (1, answered), "support {start}");
    }
    assert_eq!(r.rows.len(), 6);

    let r = compute(&day(), &request(By::Agent, Some(Interval::Quarter)));
    let first = r
        .rows
        .iter()
        .find(|r| r.key == "2001" && r.interval.as_deref() == Some("2026-12-01T10:00:00+01:00"))
        .unwrap();
    let t = first.time.as_ref().unwrap();
    // 10:00–10:15: ready 0–10 and 122–600, ringing 2, on call 100, wrap-up 10,
    // lunch 600–900.
    assert_eq!(
        (t.ready_secs, t.ringing_secs, t.on_call_secs, t.wrap_up_secs),
        (488.0, 2.0, 100.0, 10.0)
    );
    assert_eq!(t.not_ready_by_reason.get("lunch"), Some(&300.0));
    // An hour in which 2001 took no call still shows its time.
    let quiet = r
        .rows
        .iter()
        .find(|r| r.key == "2001" && r.interval.as_deref() == Some("2026-12-01T10:45:00+01:00"))
        .unwrap();
    assert_eq!(quiet.figures.handled, 0);
    assert_eq!(quiet.time.as_ref().unwrap().ready_secs, 900.0 - 50.0);
}

#[test]
fn dids_and_flows_are_slices_too() {
    let r = compute(&day(), &request(By::Did, None));
    let d100 = &row(&r, "100").figures;
    // A, B, C, D twice, E.
    assert_eq!(
        (d100.offered, d100.answered, d100.abandoned, d100.handled),
        (6, 3, 3, 3)
    );
    let d200 = &row(&r, "200").figures;
    assert_eq!((d200.offered, d200.answered, d200.overflowed), (3, 2, 1));
    let r = compute(&day(), &request(By::Flow, None));
    assert_eq!(row(&r, "main").figures, *d100);
    assert_eq!(r.rows.len(), 1, "calls without a flow are in no flow's row");
}

#[test]
fn a_figure_recomputed_with_another_threshold_changes_only_what_depends_on_it() {
    let mut req = request(By::Queue, None);
    req.rules.target.within_ms = 300_000;
    req.rules.queue_targets.clear();
    req.rules.short_abandon_ms = 0;
    let r = compute(&day(), &req);
    let s = &row(&r, "support").figures;
    // All three answered within 300 s now.
    assert_eq!(s.answered_within, 3);
    close(s.service_level, 0.75);
    let b = &row(&r, "billing").figures;
    // B is no short abandon any more.
    assert_eq!(b.short_abandoned, 0);
    close(b.abandon_rate, 0.4);
    close(b.asa_secs, 395.5);
}

#[test]
fn times_parse_on_the_report_clock() {
    let tz = time_zone("Europe/Paris").unwrap();
    assert_eq!(parse_time("2026-12-01T10:00", &tz), Ok(T0));
    assert_eq!(parse_time("2026-12-01T09:00:00Z", &tz), Ok(T0));
    assert_eq!(parse_time("2026-12-01", &tz), Ok(T0 - 10 * 3_600_000));
    assert!(parse_time("yesterday", &tz)
        .unwrap_err()
        .contains("not a time"));
    assert!(time_zone("Mars/Olympus")
        .unwrap_err()
        .contains("not a time zone"));
}
