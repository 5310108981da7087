//! Session timers (RFC 4028) on the caller's leg, with SIPp trunk callers that ask for
//! them: a caller that stops refreshing is hung up a little before its 90 s interval
//! ends (at 60 s); one that refreshes by UPDATE keeps its call; an interval below our
//! Min-SE gets 422. The media timeout is off here, so only the session timer can end
//! a call whose caller sends no RTP.

mod common;

use std::time::Duration;

use common::*;

fn server() -> Server {
    Server::start_with(ServerConfig {
        rtp_timeout_secs: Some(0),
        ..ServerConfig::default()
    })
}

fn answered_call(server: &Server, scenario: &str) -> (SippRun, CallRecord) {
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| sipp.timeout_secs(120));
    let caller = Sipp::new(scenario)
        .service("2001")
        .timeout_secs(120)
        .run(server);
    drop(callee.wait(Duration::from_secs(10)));
    let rec = server.single_call();
    (caller, rec)
}

#[test]
fn a_caller_that_stops_refreshing_is_hung_up_before_its_interval_ends() {
    let server = server();
    let (caller, rec) = answered_call(&server, "uac_session_expire.xml");
    caller.assert_ok(&server, "the 200 carries the timer and the BYE comes");
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    assert!(
        rec.reason
            .as_deref()
            .is_some_and(|r| r.contains("session timer expired")),
        "{rec:#?}"
    );
    // RFC 4028 §10: at the interval less min(32 s, a third of it): 90 - 30 = 60 s.
    let up = rec.ended_ms.unwrap() - rec.answered_ms.unwrap();
    assert!(
        (58_000..=70_000).contains(&up),
        "hung up after {up} ms: {rec:#?}"
    );
}

#[test]
fn a_caller_that_refreshes_by_update_keeps_its_call() {
    let server = server();
    let (caller, rec) = answered_call(&server, "uac_session_refresh.xml");
    caller.assert_ok(
        &server,
        "the refresh is answered with the timer and the call lasts",
    );
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert_eq!(rec.reason, None, "{rec:#?}");
    let up = rec.ended_ms.unwrap() - rec.answered_ms.unwrap();
    assert!(up > 70_000, "the call outlived the first deadline: {up} ms");
}

#[test]
fn an_interval_below_min_se_is_refused_with_422() {
    let server = server();
    let caller = Sipp::new("uac_session_too_small.xml")
        .service("2001")
        .run(&server);
    caller.assert_ok(&server, "422 with Min-SE: 90");
    assert_eq!(server.single_call().final_code, Some(422));
}

#[test]
fn asked_to_refresh_switchboard_sends_an_update_at_half_the_interval() {
    let server = server();
    let (caller, rec) = answered_call(&server, "uac_session_we_refresh.xml");
    caller.assert_ok(
        &server,
        "the server's refreshing UPDATE comes and the call goes on",
    );
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    // The UPDATE came at 45 s; the caller hung up 2 s after answering it.
    let up = rec.ended_ms.unwrap() - rec.answered_ms.unwrap();
    assert!((45_000..=55_000).contains(&up), "{up} ms: {rec:#?}");
}
