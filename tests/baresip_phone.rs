//! Real softphones against the server.
//!
//! * baresip registers as extension 2001 and auto-answers, sending a 440 Hz tone
//!   and recording what it hears; SIPp calls DID 2001 as a trunk and plays PCMA
//!   speech. The call must be answered with RTP both ways through the server, and
//!   a loopback capture must show that no RTP went directly between the phone and
//!   SIPp: every media packet goes to or comes from the server's RTP ports.
//! * Two baresip phones, a trunk caller playing 440 Hz and agent 2001 playing
//!   700 Hz, must each hear the other's tone and nothing else.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::audio;
use common::phone::{tone_wav, Phone};
use common::*;

/// Starts baresip registered as 2001, auto-answering and playing 440 Hz (panics
/// with its log if it does not register).
fn start_registered_phone(server: &Server, work: &Path) -> Phone {
    Phone::agent(server, "2001")
        .auto_answer()
        .source(&tone_wav(work, 440, 8000))
        .start(server)
}

/// The softphone Debian ships must be able to register against the default
/// configuration (no digest settings).
#[test]
fn baresip_registers_with_the_default_config() {
    require_tool("baresip", "baresip");
    require_tool("sox", "sox");
    let server = Server::start();
    let work = tempfile::Builder::new()
        .prefix("baresip-")
        .tempdir()
        .unwrap();
    let mut phone = start_registered_phone(&server, work.path());
    phone.quit();
}

#[test]
fn baresip_agent_answers_trunk_call_with_media_through_server() {
    require_tool("baresip", "baresip");
    require_tool("sox", "sox");
    require_tool("tshark", "tshark");
    require_pcap();

    // The shipped demo configuration, with only ports and data directory overridden.
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::Builder::new()
        .prefix("baresip-")
        .tempdir()
        .unwrap();
    let mut phone = start_registered_phone(&server, work.path());

    // capture every UDP packet of the phone's and the caller's media ports and
    // of the server's RTP range
    let sipp_media = alloc_ports(4);
    let (plo, phi) = phone.rtp_ports();
    let (slo, shi) = server.rtp_ports;
    let filter = format!(
        "udp and (portrange {plo}-{phi} or portrange {sipp_media}-{} or portrange {slo}-{shi})",
        sipp_media + 3
    );
    let capture = Capture::start(work.path(), &filter, 60);

    let started = now_ms();
    let caller = Sipp::new("uac_call.xml")
        .service("2001")
        .media_port(sipp_media)
        .duration_ms(3_000)
        .timeout_secs(30)
        .run(&server);
    let pairs = capture.finish();
    let rec_dec = phone.recordings("-dec.wav");
    let phone_log = phone.log();
    phone.quit();

    caller.assert_ok(
        &server,
        &format!("trunk call answered by baresip\nbaresip log:\n{phone_log}"),
    );
    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(200), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2001"), "{rec:#?}");
    rec.assert_media_both_ways(20);

    // media path on the wire
    let in_phone = |p: u16| (plo..=phi).contains(&p);
    let in_sipp = |p: u16| (sipp_media..sipp_media + 4).contains(&p);
    let in_server = |p: u16| (slo..=shi).contains(&p);
    let count = |f: &dyn Fn(u16, u16) -> bool| -> u32 {
        pairs
            .iter()
            .filter(|((s, d), _)| f(*s, *d))
            .map(|(_, n)| *n)
            .sum()
    };
    let direct = count(&|s, d| (in_phone(s) && in_sipp(d)) || (in_sipp(s) && in_phone(d)));
    let summary = format!(
        "packets by (src port, dst port): {pairs:?}\nphone RTP {plo}-{phi}, SIPp media \
         {sipp_media}-{}, server RTP {slo}-{shi}",
        sipp_media + 3
    );
    eprintln!("{summary}");
    assert_eq!(
        direct, 0,
        "RTP went directly between the phone and SIPp\n{summary}"
    );
    for (what, n) in [
        ("SIPp → server", count(&|s, d| in_sipp(s) && in_server(d))),
        ("server → SIPp", count(&|s, d| in_server(s) && in_sipp(d))),
        ("phone → server", count(&|s, d| in_phone(s) && in_server(d))),
        ("server → phone", count(&|s, d| in_server(s) && in_phone(d))),
    ] {
        assert!(n >= 20, "only {n} packets {what}\n{summary}");
    }

    // the phone heard something (the caller's speech), not silence
    assert!(
        !rec_dec.is_empty(),
        "baresip recorded nothing (no *-dec.wav)\nbaresip log:\n{phone_log}"
    );
    let heard = audio::read_wav(&rec_dec[0]).tones(&[]).rms;
    eprintln!("phone recording {} RMS {heard}", rec_dec[0].display());
    assert!(
        heard > 0.005,
        "the phone's recording of the call is silent (RMS {heard}): {}",
        rec_dec[0].display()
    );
}

/// A trunk caller and the agent it reaches, both real softphones, hear each other
/// through the server's bridge: the caller's recording is the agent's tone, the
/// agent's is the caller's, and neither hears itself or anything else.
#[test]
fn baresip_caller_and_agent_hear_each_other() {
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::Builder::new()
        .prefix("baresip-")
        .tempdir()
        .unwrap();
    let agent = Phone::agent(&server, "2001")
        .auto_answer()
        .source(&tone_wav(work.path(), 700, 8000))
        .start(&server);
    let caller = Phone::dialler("caller")
        .source(&tone_wav(work.path(), 440, 8000))
        .start(&server);

    let started = now_ms();
    caller.call(&server, "2001");
    caller.wait_established(Duration::from_secs(10));
    agent.wait_established(Duration::from_secs(10));
    let talk = Instant::now();
    thread::sleep(Duration::from_secs(3));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));
    let talked = talk.elapsed();

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2001"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");

    let caller_heard = audio::assert_dominated_by(&caller.heard(), 700.0, &[440.0, 1000.0]);
    let agent_heard = audio::assert_dominated_by(&agent.heard(), 440.0, &[700.0, 1000.0]);
    eprintln!("caller heard: {caller_heard}\nagent heard: {agent_heard}");
    for (who, t) in [("caller", &caller_heard), ("agent", &agent_heard)] {
        assert!(
            t.duration >= Duration::from_secs(2) && t.duration <= talked + Duration::from_secs(2),
            "the {who}'s recording lasts {:?} for {talked:?} of talking: {t}",
            t.duration
        );
    }
}
