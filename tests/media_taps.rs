//! The call's mixer taps with real softphones: recording, and a supervisor who listens,
//! whispers and barges.
//!
//! Every party is a baresip phone playing its own tone — caller 440 Hz, agent 700 Hz,
//! supervisor 1000 Hz — and recording what it hears; who heard whom is judged by each
//! tone's share of the power in those recordings (and in Switchboard's own recording),
//! over time windows that leave a second of margin around every change.

mod common;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::audio::{read_wav, tone_shares, Tones, Wav};
use common::phone::{tone_wav, Phone};
use common::*;

const CALLER: f64 = 440.0;
const AGENT: f64 = 700.0;
const SUPERVISOR: f64 = 1000.0;
const TONES: [f64; 3] = [CALLER, AGENT, SUPERVISOR];

/// The tones of `channel` of `wav` between `from` and `to` (from the file's start).
fn window(wav: &Wav, channel: usize, from: Duration, to: Duration) -> Tones {
    let samples = &wav.channels[channel];
    let at = |d: Duration| ((d.as_secs_f64() * f64::from(wav.rate)) as usize).min(samples.len());
    let (a, b) = (at(from), at(to));
    assert!(
        b > a + wav.rate as usize / 2,
        "{} is {:?} long; no room for the window {from:?}..{to:?}",
        wav.path.display(),
        wav.duration()
    );
    let mut t = tone_shares(&samples[a..b], wav.rate, &TONES);
    t.what = format!("{} channel {channel}, {from:?}..{to:?}", wav.path.display());
    t
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A caller (dialling DID 2001 from the loopback trunk) and agent 2001, talking.
fn talking(server: &Server, work: &std::path::Path) -> (Phone, Phone, Instant) {
    let agent = Phone::agent(server, "2001")
        .auto_answer()
        .source(&tone_wav(work, AGENT as u32, 8000))
        .start(server);
    let caller = Phone::dialler("caller")
        .source(&tone_wav(work, CALLER as u32, 8000))
        .start(server);
    caller.call(server, "2001");
    caller.wait_established(Duration::from_secs(10));
    let answered = Instant::now();
    agent.wait_established(Duration::from_secs(10));
    (caller, agent, answered)
}

#[test]
fn a_supervisor_listens_then_whispers_then_barges_and_each_party_hears_what_it_should() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let (mut caller, mut agent, answered) = talking(&server, work.path());
    let mut supervisor = Phone::agent(&server, "3001")
        .source(&tone_wav(work.path(), SUPERVISOR as u32, 8000))
        .start(&server);

    thread::sleep(secs(1.0));
    supervisor.call(&server, "*12001");
    supervisor.wait_established(Duration::from_secs(10));
    let joined = answered.elapsed();
    thread::sleep(secs(4.0));
    supervisor.send_dtmf('5');
    let whisper = answered.elapsed();
    thread::sleep(secs(4.0));
    supervisor.send_dtmf('6');
    let barge = answered.elapsed();
    thread::sleep(secs(4.0));
    let left = answered.elapsed();
    supervisor.hangup();
    supervisor.wait_closed(Duration::from_secs(10));
    thread::sleep(secs(1.5));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));

    let (caller_heard, agent_heard, sup_heard) = (
        read_wav(&caller.heard()),
        read_wav(&agent.heard()),
        read_wav(&supervisor.heard()),
    );
    // Windows on the caller's and agent's timeline (their recordings start at the
    // answer), with a second of margin after each change.
    let listen = (joined + secs(1.0), whisper - secs(0.3));
    let whispering = (whisper + secs(1.0), barge - secs(0.3));
    let barging = (barge + secs(1.0), left - secs(0.3));
    let after = (left + secs(0.5), left + secs(1.3));

    // Listen: the supervisor hears both; nobody hears the supervisor.
    window(&caller_heard, 0, listen.0, listen.1).assert_hears(&[AGENT], &[SUPERVISOR, CALLER]);
    window(&agent_heard, 0, listen.0, listen.1).assert_hears(&[CALLER], &[SUPERVISOR, AGENT]);
    // The supervisor's own recording starts when it joined.
    let on_sup = |t: Duration| t.saturating_sub(joined);
    window(&sup_heard, 0, on_sup(listen.0), on_sup(listen.1))
        .assert_hears(&[CALLER, AGENT], &[SUPERVISOR]);

    // Whisper (key 5): the agent hears the supervisor, the caller does not.
    window(&agent_heard, 0, whispering.0, whispering.1)
        .assert_hears(&[CALLER, SUPERVISOR], &[AGENT]);
    window(&caller_heard, 0, whispering.0, whispering.1)
        .assert_hears(&[AGENT], &[SUPERVISOR, CALLER]);
    window(&sup_heard, 0, on_sup(whispering.0), on_sup(whispering.1))
        .assert_hears(&[CALLER, AGENT], &[SUPERVISOR]);

    // Barge (key 6): both hear the supervisor.
    window(&caller_heard, 0, barging.0, barging.1).assert_hears(&[AGENT, SUPERVISOR], &[CALLER]);
    window(&agent_heard, 0, barging.0, barging.1).assert_hears(&[CALLER, SUPERVISOR], &[AGENT]);

    // The supervisor hung up: the two go on talking without it.
    window(&caller_heard, 0, after.0, after.1).assert_hears(&[AGENT], &[SUPERVISOR]);
    window(&agent_heard, 0, after.0, after.1).assert_hears(&[CALLER], &[SUPERVISOR]);

    caller.quit();
    agent.quit();
    supervisor.quit();
    let rows = server.wait_for_calls(2, Duration::from_secs(10));
    let sup_row = rows
        .iter()
        .find(|r| r.caller_user.as_deref() == Some("3001"))
        .expect("the supervisor's call has a record");
    assert_eq!(
        sup_row.reason.as_deref(),
        Some("listened to 2001"),
        "{sup_row:#?}"
    );
}

#[test]
fn only_supervisors_may_listen_and_an_idle_agent_is_announced() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    // An agent dialling *1 is refused (SIPp's scenario expects an answer, so its run
    // fails; the record says why).
    let _ = Sipp::new("uac_user_feature.xml")
        .service("*12002")
        .args(&["-key", "agent", "2001"])
        .auth("2001", &server.config.password("2001"))
        .timeout_secs(10)
        .run(&server);
    // The supervisor asking for an agent who is on no call hears so and is hung up on.
    Sipp::new("uac_user_feature.xml")
        .service("*12002")
        .args(&["-key", "agent", "3001"])
        .auth("3001", &server.config.password("3001"))
        .run(&server)
        .assert_ok(&server, "3001 dials *12002 and is told 2002 is on no call");
    let rows = server.wait_for_calls(2, Duration::from_secs(10));
    let by = |user: &str| {
        rows.iter()
            .find(|r| r.caller_user.as_deref() == Some(user))
            .unwrap_or_else(|| panic!("no record for {user}: {rows:#?}"))
    };
    let agent = by("2001");
    assert_eq!(agent.final_code, Some(403), "{agent:#?}");
    let sup = by("3001");
    assert_eq!(sup.disposition.as_deref(), Some("answered"), "{sup:#?}");
    assert_eq!(
        sup.reason.as_deref(),
        Some("2002 is not on a call"),
        "{sup:#?}"
    );
}

/// The recording of the (only) call in `server`'s data directory.
fn recording_of(server: &Server) -> PathBuf {
    let rows = server.wait_for_calls(1, Duration::from_secs(10));
    let name = rows[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("the call was not recorded: {:#?}", rows[0]));
    server.data_dir.join(name)
}

#[test]
fn a_recorded_call_is_stereo_caller_left_agent_right_and_paused_stretches_are_silent() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let (mut caller, mut agent, _) = talking(&server, work.path());
    thread::sleep(secs(3.0));
    // The agent pauses the recording (the demo's keys are *3) while card details are
    // read out, then resumes it.
    agent.send_dtmf('*');
    agent.send_dtmf('3');
    thread::sleep(secs(3.0));
    agent.send_dtmf('*');
    agent.send_dtmf('3');
    thread::sleep(secs(3.0));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));
    caller.quit();
    agent.quit();

    let path = recording_of(&server);
    let rec = server.calls().unwrap().remove(0);
    let wav = read_wav(&path);
    assert_eq!(wav.channels.len(), 2, "stereo");
    assert_eq!(wav.rate, 8000);
    // As long as the conversation, within 100 ms.
    let talk = Duration::from_millis((rec.ended_ms.unwrap() - rec.bridged_ms.unwrap()) as u64);
    let length = wav.duration();
    assert!(
        length.abs_diff(talk) <= Duration::from_millis(100),
        "recording {length:?}, talk time {talk:?}"
    );
    assert_eq!(
        rec.recording_ms,
        Some(length.as_millis() as i64),
        "{rec:#?}"
    );

    // Caller left, agent right, before the pause and after it.
    for (from, to) in [(secs(0.5), secs(2.8)), (secs(7.0), secs(8.8))] {
        window(&wav, 0, from, to).assert_hears(&[CALLER], &[AGENT]);
        window(&wav, 1, from, to).assert_hears(&[AGENT], &[CALLER]);
    }
    // The paused stretch is silence in both channels. (The keys arrive some 100 ms
    // after they are sent; a second of margin each side.)
    for channel in [0, 1] {
        let paused = window(&wav, channel, secs(4.0), secs(5.5));
        assert!(paused.is_silent(), "paused, yet {paused:?}");
    }
}

#[test]
fn a_recording_survives_kill_9_readable_up_to_the_last_second() {
    let mut server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let (_caller, _agent, answered) = talking(&server, work.path());
    thread::sleep(secs(3.5));
    let killed_after = answered.elapsed();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = server.terminate(Duration::from_secs(5));

    // No record (the call never ended), but the recording is on disk.
    let dir = server.data_dir.join("recordings");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let wav = read_wav(&files[0]);
    let length = wav.duration();
    assert!(
        length >= secs(2.0) && length <= killed_after,
        "a readable WAV up to the last whole second: {length:?} of {killed_after:?}"
    );
    window(&wav, 0, secs(0.5), length - secs(0.2)).assert_hears(&[CALLER], &[AGENT]);
    window(&wav, 1, secs(0.5), length - secs(0.2)).assert_hears(&[AGENT], &[CALLER]);
}

#[test]
fn a_pcmu_caller_and_a_g722_agent_hear_each_other_through_the_transcoding_bridge() {
    // The IVR answers the caller in PCMU and transfers it to 2001, whose phone speaks
    // only G.722: the bridge transcodes both ways (and resamples 8 ↔ 16 kHz).
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("main.yaml"),
        "name: main\nentry: agent\nnodes:\n  agent:\n    transfer:\n      extension: \"2001\"\n",
    )
    .unwrap();
    let server = Server::start_with(ServerConfig {
        dids: Vec::new(),
        flow_dids: vec![("100".into(), "main".into())],
        ivr: Some((
            flows.path().to_path_buf(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        )),
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let mut agent = Phone::agent(&server, "2001")
        .auto_answer()
        .codecs(&[common::phone::Codec::G722])
        .source(&tone_wav(work.path(), AGENT as u32, 16000))
        .start(&server);
    let mut caller = Phone::dialler("caller")
        .codecs(&[common::phone::Codec::Pcmu])
        .source(&tone_wav(work.path(), CALLER as u32, 8000))
        .start(&server);
    caller.call(&server, "100");
    caller.wait_established(Duration::from_secs(10));
    agent.wait_established(Duration::from_secs(10));
    thread::sleep(secs(4.0));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));

    let caller_heard = read_wav(&caller.heard());
    let agent_heard = read_wav(&agent.heard());
    assert_eq!((caller_heard.rate, agent_heard.rate), (8000, 16000));
    let end = |w: &Wav| w.duration().saturating_sub(secs(0.3));
    window(&caller_heard, 0, secs(1.5), end(&caller_heard)).assert_hears(&[AGENT], &[CALLER]);
    window(&agent_heard, 0, secs(1.0), end(&agent_heard)).assert_hears(&[CALLER], &[AGENT]);
    caller.quit();
    agent.quit();
    let rec = server.single_call();
    rec.assert_media_both_ways(50);
    // Reception as RFC 3550 receiver reports count it: nothing lost on loopback, and
    // the jitter of two phones 20 ms apart is a few milliseconds at most.
    assert_eq!(
        (rec.a_rtp_lost, rec.b_rtp_lost),
        (Some(0), Some(0)),
        "{rec:#?}"
    );
    for jitter in [rec.a_jitter_ms, rec.b_jitter_ms] {
        assert!(jitter.is_some_and(|j| (0.0..10.0).contains(&j)), "{rec:#?}");
    }
}

#[test]
fn a_recording_paused_and_resumed_by_the_api_is_silent_while_paused() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let api = common::api::Api::new(&server);
    // The shipped demo's admin token.
    let token = "sb_demo_admin";
    let work = tempfile::tempdir().unwrap();
    let (mut caller, mut agent, _) = talking(&server, work.path());
    let live = api.wait_for("/api/v1/calls", token, Duration::from_secs(5), |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["phase"] == "talking")
    });
    let uuid = live[0]["call_uuid"].as_str().unwrap().to_string();
    assert_eq!(live[0]["recording"], "recording", "{live:#}");
    let path = format!("/api/v1/calls/{uuid}/recording");
    let act = |action: &str| {
        let r = api.post(&path, token, serde_json::json!({ "action": action }));
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        r.body["result"].as_str().unwrap().to_string()
    };
    thread::sleep(secs(3.0));
    assert_eq!(act("pause"), "paused");
    thread::sleep(secs(3.0));
    assert_eq!(act("resume"), "recording");
    // A second recording of the same call is refused, with the reason.
    let r = api.post(&path, token, serde_json::json!({ "action": "start" }));
    assert_eq!(r.status, 409, "{}", r.text);
    thread::sleep(secs(3.0));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));
    caller.quit();
    agent.quit();

    let wav = read_wav(&recording_of(&server));
    for (from, to) in [(secs(0.5), secs(2.8)), (secs(7.0), secs(8.8))] {
        window(&wav, 0, from, to).assert_hears(&[CALLER], &[AGENT]);
        window(&wav, 1, from, to).assert_hears(&[AGENT], &[CALLER]);
    }
    for channel in [0, 1] {
        let paused = window(&wav, channel, secs(3.5), secs(5.7));
        assert!(paused.is_silent(), "paused by the API, yet {paused:?}");
    }
    // The event log has the pause and the resume, by whom.
    let events = api.all_events(token, 0);
    let states: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "call.recording")
        .map(|e| {
            (
                e["data"]["state"].as_str().unwrap(),
                e["data"]["by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("recording", ""),
            ("paused", "api:demo-admin"),
            ("recording", "api:demo-admin")
        ]
    );
}

#[test]
fn a_supervisor_asked_by_the_api_to_whisper_is_rung_joins_and_is_heard_by_the_agent_only() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let api = common::api::Api::new(&server);
    let token = "sb_demo_admin";
    let work = tempfile::tempdir().unwrap();
    let (mut caller, mut agent, answered) = talking(&server, work.path());
    let mut supervisor = Phone::agent(&server, "3001")
        .auto_answer()
        .source(&tone_wav(work.path(), SUPERVISOR as u32, 8000))
        .start(&server);
    let live = api.wait_for("/api/v1/calls", token, Duration::from_secs(5), |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["phase"] == "talking")
    });
    let uuid = live[0]["call_uuid"].as_str().unwrap().to_string();
    let path = format!("/api/v1/calls/{uuid}/supervise");
    // A reporting token may not; an agent is not a supervisor.
    let r = api.post(
        &path,
        "sb_demo_wallboard",
        serde_json::json!({"mode": "whisper", "supervisor": "3001"}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.post(
        &path,
        token,
        serde_json::json!({"mode": "whisper", "supervisor": "2002"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    let r = api.post(
        &path,
        token,
        serde_json::json!({"mode": "whisper", "supervisor": "3001"}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    supervisor.wait_established(Duration::from_secs(10));
    let joined = answered.elapsed();
    api.wait_for(
        &format!("/api/v1/calls/{uuid}"),
        token,
        Duration::from_secs(5),
        |v| v["live"]["supervisors"]["3001"] == "whisper",
    );
    thread::sleep(secs(4.0));
    // Barge, by the API again: the same supervisor changes mode, no second ring.
    let r = api.post(
        &path,
        token,
        serde_json::json!({"mode": "barge", "supervisor": "3001"}),
    );
    assert_eq!(
        (r.status, r.body["result"].as_str()),
        (200, Some("barge")),
        "{}",
        r.text
    );
    let barge = answered.elapsed();
    thread::sleep(secs(4.0));
    let left = answered.elapsed();
    supervisor.hangup();
    supervisor.wait_closed(Duration::from_secs(10));
    thread::sleep(secs(1.0));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));

    let (caller_heard, agent_heard, sup_heard) = (
        read_wav(&caller.heard()),
        read_wav(&agent.heard()),
        read_wav(&supervisor.heard()),
    );
    let whispering = (joined + secs(1.0), barge - secs(0.3));
    let barging = (barge + secs(1.0), left - secs(0.3));
    window(&agent_heard, 0, whispering.0, whispering.1)
        .assert_hears(&[CALLER, SUPERVISOR], &[AGENT]);
    window(&caller_heard, 0, whispering.0, whispering.1)
        .assert_hears(&[AGENT], &[SUPERVISOR, CALLER]);
    let on_sup = |t: Duration| t.saturating_sub(joined);
    window(&sup_heard, 0, on_sup(whispering.0), on_sup(whispering.1))
        .assert_hears(&[CALLER, AGENT], &[SUPERVISOR]);
    window(&caller_heard, 0, barging.0, barging.1).assert_hears(&[AGENT, SUPERVISOR], &[CALLER]);

    caller.quit();
    agent.quit();
    supervisor.quit();
    let rows = server.wait_for_calls(2, Duration::from_secs(10));
    let sup_row = rows
        .iter()
        .find(|r| r.caller_user.as_deref() == Some("3001"))
        .expect("the supervisor's call has a record");
    assert_eq!(
        sup_row.reason.as_deref(),
        Some("whispered to 2001 (api:demo-admin)"),
        "{sup_row:#?}"
    );
}
