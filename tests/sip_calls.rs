//! End-to-end SIP tests against the real `switchboard` binary with SIPp peers on
//! loopback: registration, OPTIONS, and every way a trunk call to an agent can
//! end, each checked both on the wire and in the `calls` record.

mod common;

use std::time::Duration;

use common::*;

/// Call length used by the answered-call scenarios (`-d`).
const TALK_MS: u64 = 2_000;

fn caller(scenario_file: &str, did: &str) -> Sipp {
    require_pcap();
    Sipp::new(scenario_file).service(did).timeout_secs(45)
}

/// The 403 status line received by a register_bad.xml run.
fn rejection_line(run: &SippRun) -> String {
    let got = run.received("SIP/2.0 403");
    assert!(!got.is_empty(), "no 403 received\n{}", run.report());
    status_line(&got[0]).to_string()
}

// ---------------------------------------------------------------------------
// Registration and OPTIONS
// ---------------------------------------------------------------------------

#[test]
fn register_with_right_credentials_gets_200() {
    let server = Server::start();
    let port = alloc_ports(1);
    let run = server.register("2001", port);

    let challenge = run.received("SIP/2.0 401");
    assert_eq!(challenge.len(), 1, "expected one 401\n{}", run.report());
    let www = header(&challenge[0], "WWW-Authenticate")
        .unwrap_or_else(|| panic!("401 without WWW-Authenticate:\n{}", challenge[0]));
    assert!(www.starts_with("Digest"), "not a Digest challenge: {www}");
    for param in ["realm=", "nonce=", "qop="] {
        assert!(www.contains(param), "challenge lacks {param}: {www}");
    }

    // RFC 3261 10.3: the 200 lists the current bindings, ours included.
    let ok = run.received("SIP/2.0 200");
    let contact = header(&ok[0], "Contact")
        .unwrap_or_else(|| panic!("200 to REGISTER without Contact:\n{}", ok[0]));
    assert!(
        contact.contains(&format!("127.0.0.1:{port}")),
        "200 does not list our binding: {contact}"
    );
}

#[test]
fn register_rejections_do_not_reveal_which_part_was_wrong() {
    let server = Server::start();
    // wrong password for a real extension
    let wrong_password = Sipp::new("register_bad.xml")
        .service("2001")
        .auth("2001", "not-the-password")
        .run(&server);
    wrong_password.assert_ok(&server, "REGISTER 2001 with a wrong password → 401, 403");
    // an extension that does not exist
    let unknown_user = Sipp::new("register_bad.xml")
        .service("9999")
        .auth("9999", "secret9999")
        .run(&server);
    unknown_user.assert_ok(&server, "REGISTER unknown 9999 → 401, 403");
    // From 2001 but the digest is 2002's (valid for 2002)
    let other_user = Sipp::new("register_bad.xml")
        .service("2001")
        .auth("2002", "secret2002")
        .run(&server);
    other_user.assert_ok(&server, "REGISTER 2001 with 2002's credentials → 401, 403");

    let a = rejection_line(&wrong_password);
    let b = rejection_line(&unknown_user);
    let c = rejection_line(&other_user);
    assert_eq!(
        a, b,
        "wrong password and unknown user must get the same answer"
    );
    assert_eq!(
        a, c,
        "wrong password and wrong digest user must get the same answer"
    );
}

#[test]
fn register_then_unregister_makes_extension_unavailable() {
    let server = Server::start();
    let port = alloc_ports(1);
    server.register("2002", port);
    let run = Sipp::new("unregister.xml")
        .service("2002")
        .auth("2002", "secret2002")
        .local_port(port)
        .run(&server);
    run.assert_ok(&server, "REGISTER Expires: 0");

    let call = caller("uac_expect_480.xml", "2002").run(&server);
    call.assert_ok(&server, "call to unregistered 2002 → 480");
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("unavailable"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(480), "{rec:#?}");
}

#[test]
fn digest_auth_works_with_every_offered_algorithm() {
    // Raw REGISTERs answering each challenge the server offers (MD5 and/or
    // SHA-256, qop=auth), computed here independently of SIPp.
    use md5::Digest as _;
    let server = Server::start_with(ServerConfig {
        extra_sip: vec!["auth_algorithms: [MD5, SHA-256]".into()],
        ..ServerConfig::default()
    });
    let udp = RawUdp::new(&server);
    let call_id = unique("reg");
    let register = |cseq: u32, auth: Option<String>| {
        let mut h = vec![
            format!(
                "Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{};rport",
                udp.port,
                unique("b")
            ),
            "Max-Forwards: 70".to_string(),
            format!("From: <sip:2003@127.0.0.1>;tag={}", unique("t")),
            "To: <sip:2003@127.0.0.1>".to_string(),
            format!("Call-ID: {call_id}"),
            format!("CSeq: {cseq} REGISTER"),
            format!("Contact: <sip:2003@127.0.0.1:{}>", udp.port),
            "Expires: 60".to_string(),
        ];
        if let Some(a) = auth {
            h.push(format!("Authorization: {a}"));
        }
        sip_message(&format!("REGISTER sip:{} SIP/2.0", server.addr()), &h, "")
    };
    udp.send(register(1, None).as_bytes());
    let mut others = Vec::new();
    let challenge = udp
        .recv_final(Duration::from_secs(3), &mut others)
        .unwrap_or_else(|| panic!("no answer to REGISTER\n{}", server.stderr_tail(40)));
    assert_eq!(status_code(&challenge), Some(401), "{challenge}");
    let challenges: Vec<String> = challenge
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        .collect();
    assert_eq!(
        challenges.len(),
        2,
        "expected an MD5 and a SHA-256 challenge:\n{challenge}"
    );

    let param = |ch: &str, name: &str| -> Option<String> {
        let lower = ch.to_ascii_lowercase();
        let at = lower.find(&format!("{name}="))? + name.len() + 1;
        let rest = &ch[at..];
        Some(if let Some(r) = rest.strip_prefix('"') {
            r[..r.find('"')?].to_string()
        } else {
            rest.split([',', ' ']).next()?.to_string()
        })
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for (i, ch) in challenges.iter().enumerate() {
        let cseq = 2 + i as u32;
        let algorithm = param(ch, "algorithm").unwrap_or_else(|| "MD5".into());
        let hash = |s: &str| -> String {
            match algorithm.to_ascii_uppercase().as_str() {
                "MD5" => hex(&md5::Md5::digest(s.as_bytes())),
                "SHA-256" => hex(&sha2::Sha256::digest(s.as_bytes())),
                other => panic!("server offered unexpected digest algorithm {other}"),
            }
        };
        let realm = param(ch, "realm").expect("realm");
        let nonce = param(ch, "nonce").expect("nonce");
        let uri = format!("sip:{}", server.addr());
        let cnonce = "0a4f113b";
        let ha1 = hash(&format!("2003:{realm}:secret2003"));
        let ha2 = hash(&format!("REGISTER:{uri}"));
        let response = hash(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        let auth = format!(
            "Digest username=\"2003\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={algorithm}, cnonce=\"{cnonce}\", qop=auth, nc=00000001"
        );
        udp.send(register(cseq, Some(auth)).as_bytes());
        let answer = udp
            .recv_final(Duration::from_secs(3), &mut others)
            .unwrap_or_else(|| panic!("no answer to authenticated REGISTER ({algorithm})"));
        assert_eq!(
            status_code(&answer),
            Some(200),
            "REGISTER answering the {algorithm} challenge `{ch}` was not accepted:\n{answer}"
        );
    }
}

#[test]
fn options_gets_200_over_udp_and_tcp() {
    let server = Server::start();
    let udp = Sipp::new("options.xml").run(&server);
    udp.assert_ok(&server, "OPTIONS over UDP");
    let tcp = Sipp::new("options.xml").tcp().run(&server);
    tcp.assert_ok(&server, "OPTIONS over TCP");
}

#[test]
fn command_line_overrides_replace_listeners_ports_and_data_dir() {
    // The file names other ports and another data dir; the flags must win.
    let server = Server::start_with(ServerConfig {
        use_cli_overrides: true,
        ..ServerConfig::default()
    });
    Sipp::new("options.xml")
        .run(&server)
        .assert_ok(&server, "OPTIONS on the --sip-listen address (UDP)");
    Sipp::new("options.xml")
        .tcp()
        .run(&server)
        .assert_ok(&server, "OPTIONS on the --sip-listen address (TCP)");
    caller("uac_expect_480.xml", "2002")
        .run(&server)
        .assert_ok(&server, "call to unregistered 2002 → 480");
    // the record lands in --data-dir
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("unavailable"), "{rec:#?}");
    assert!(
        !server.dir.path().join("decoy-data/switchboard.db").exists(),
        "the data_dir from the file was used despite --data-dir"
    );
}

#[test]
fn sigterm_exits_zero() {
    let server = Server::start();
    Sipp::new("options.xml")
        .run(&server)
        .assert_ok(&server, "OPTIONS before SIGTERM");
    let log_before = server.stderr();
    let status = server.stop();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{log_before}"
    );
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

/// Common checks for a trunk call from the caller scenarios to DID `did`.
fn assert_trunk_call(rec: &CallRecord, caller_run: &SippRun, did: &str, target: Option<&str>) {
    assert_eq!(
        rec.a_call_id.as_deref(),
        Some(invite_call_id(caller_run, true).as_str()),
        "a_call_id must be the caller's Call-ID: {rec:#?}"
    );
    assert_eq!(rec.source_kind.as_deref(), Some("trunk"), "{rec:#?}");
    assert_eq!(rec.trunk.as_deref(), Some("loopback"), "{rec:#?}");
    assert_eq!(rec.did.as_deref(), Some(did), "{rec:#?}");
    assert_eq!(rec.dialed.as_deref(), Some(did), "{rec:#?}");
    assert_eq!(rec.from_user.as_deref(), Some("+15550100"), "{rec:#?}");
    assert!(
        rec.from_uri
            .as_deref()
            .is_some_and(|u| u.contains("sip:+15550100@127.0.0.1")),
        "from_uri: {rec:#?}"
    );
    assert!(
        rec.to_uri
            .as_deref()
            .is_some_and(|u| u.contains(&format!("sip:{did}@"))),
        "to_uri: {rec:#?}"
    );
    assert_eq!(
        rec.caller_user, None,
        "a trunk call has no caller_user: {rec:#?}"
    );
    assert_eq!(rec.target.as_deref(), target, "{rec:#?}");
}

/// The SDP each side received points at the server's RTP range, not at the
/// other party: media is anchored.
fn assert_media_anchored(server: &Server, caller_run: &SippRun, callee_run: &SippRun) {
    let (lo, hi) = server.rtp_ports;
    let ok = caller_run.received("SIP/2.0 200");
    let ok = ok
        .iter()
        .find(|m| header(m, "CSeq").is_some_and(|c| c.contains("INVITE")))
        .unwrap_or_else(|| panic!("caller got no 200 for INVITE\n{}", caller_run.report()));
    let (ip, port) = sdp_audio(ok).unwrap_or_else(|| panic!("200 OK without audio SDP:\n{ok}"));
    assert_eq!(ip, "127.0.0.1", "200 OK SDP address:\n{ok}");
    assert!(
        (lo..=hi).contains(&port),
        "200 OK to the caller offers port {port}, outside the server's RTP range {lo}-{hi}:\n{ok}"
    );
    let invites = callee_run.received("INVITE ");
    let inv = invites
        .first()
        .unwrap_or_else(|| panic!("callee got no INVITE\n{}", callee_run.report()));
    let (ip, port) = sdp_audio(inv).unwrap_or_else(|| panic!("INVITE without audio SDP:\n{inv}"));
    assert_eq!(ip, "127.0.0.1", "INVITE SDP address:\n{inv}");
    assert!(
        (lo..=hi).contains(&port),
        "INVITE to the callee offers port {port}, outside the server's RTP range {lo}-{hi}:\n{inv}"
    );
}

#[test]
fn answered_call_caller_hangs_up() {
    let server = Server::start();
    let started = now_ms();
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller_run = caller("uac_call.xml", "2001")
        .duration_ms(TALK_MS)
        .run(&server);
    caller_run.assert_ok(&server, "trunk call to 2001, answered, caller sends BYE");
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "callee 2001 answering and receiving BYE");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2001", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(200), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert_eq!(
        rec.b_call_id.as_deref(),
        Some(invite_call_id(&callee_run, false).as_str()),
        "b_call_id must be the Call-ID of the INVITE the callee got: {rec:#?}"
    );
    assert!(rec.ringing_ms.is_some(), "the callee sent 180: {rec:#?}");
    let talk = rec.ended_ms.unwrap() - rec.answered_ms.expect("answered_ms");
    assert!(
        (TALK_MS as i64 - 500..TALK_MS as i64 + 3_000).contains(&talk),
        "answered→ended {talk} ms, expected about {TALK_MS}: {rec:#?}"
    );
    // ~33 packets/s from the pcap for 2 s, echoed back by the callee
    rec.assert_media_both_ways(10);
    assert_media_anchored(&server, &caller_run, &callee_run);
}

#[test]
fn answered_call_over_tcp_caller() {
    let server = Server::start();
    let callee = server.start_callee("2002", "uas_answer.xml", &[]);
    let caller_run = caller("uac_call.xml", "2002")
        .tcp()
        .duration_ms(1_000)
        .run(&server);
    caller_run.assert_ok(&server, "trunk call over TCP to 2002");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee 2002");
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    rec.assert_media_both_ways(1);
}

#[test]
fn did_100_routes_to_extension_2001() {
    let server = Server::start();
    let started = now_ms();
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller_run = caller("uac_call.xml", "100")
        .duration_ms(1_000)
        .run(&server);
    caller_run.assert_ok(&server, "call to DID 100");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee 2001 via DID 100");
    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "100", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
}

#[test]
fn answered_call_callee_hangs_up() {
    let server = Server::start();
    let started = now_ms();
    let callee = server.start_callee(
        "2001",
        "uas_answer_then_bye.xml",
        &["-d", &TALK_MS.to_string()],
    );
    let caller_run = caller("uac_call_wait_bye.xml", "2001").run(&server);
    caller_run.assert_ok(
        &server,
        "trunk call to 2001, callee sends BYE, caller answers it",
    );
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "callee 2001 hanging up");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2001", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(200), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("callee"), "{rec:#?}");
    rec.assert_media_both_ways(10);

    // the BYE reaching the caller belongs to the caller's dialog
    let bye = caller_run.received("BYE ");
    assert_eq!(
        bye.len(),
        1,
        "caller should get one BYE\n{}",
        caller_run.report()
    );
    assert_eq!(
        header(&bye[0], "Call-ID"),
        rec.a_call_id.as_deref(),
        "BYE to the caller carries the caller's Call-ID"
    );
}

#[test]
fn all_registered_contacts_ring_and_first_answer_wins() {
    let server = Server::start();
    let ringer = server.start_callee("2001", "uas_ring_forever.xml", &[]);
    let answerer = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller_run = caller("uac_call.xml", "2001")
        .duration_ms(1_000)
        .run(&server);
    caller_run.assert_ok(&server, "call to 2001 with two registered contacts");
    let ringer_run = ringer.wait(Duration::from_secs(10));
    ringer_run.assert_ok(&server, "the contact that did not answer gets CANCEL");
    let answerer_run = answerer.wait(Duration::from_secs(10));
    answerer_run.assert_ok(&server, "the contact that answered gets the BYE");

    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(
        rec.b_call_id.as_deref(),
        Some(invite_call_id(&answerer_run, false).as_str()),
        "b_call_id is the answering leg's Call-ID: {rec:#?}"
    );
}

#[test]
fn caller_cancels_while_ringing() {
    let server = Server::start();
    let started = now_ms();
    let callee = server.start_callee("2001", "uas_ring_forever.xml", &[]);
    let caller_run = caller("uac_cancel.xml", "2001").run(&server);
    caller_run.assert_ok(&server, "caller: INVITE, 180, CANCEL, 200, 487, ACK");
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "callee: CANCEL relayed, 487 answered");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2001", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some("abandoned"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(487), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert!(rec.ringing_ms.is_some(), "{rec:#?}");
    assert_eq!(rec.answered_ms, None, "{rec:#?}");
    rec.assert_no_media();
}

/// The callee refuses with `code`: the caller gets the same final answer and the record
/// says who refused.
fn callee_refusal(uas: &str, uac: &str, disposition: &str, code: i64) {
    let server = Server::start();
    let started = now_ms();
    let callee = server.start_callee("2001", uas, &[]);
    let caller_run = caller(uac, "2001").run(&server);
    caller_run.assert_ok(&server, &format!("caller expects {code}"));
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, &format!("callee answers {code} and gets ACK"));

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2001", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some(disposition), "{rec:#?}");
    assert_eq!(rec.final_code, Some(code), "{rec:#?}");
    assert_eq!(rec.answered_ms, None, "{rec:#?}");
    assert_eq!(
        rec.hangup_by.as_deref(),
        Some("callee"),
        "the callee refused: {rec:#?}"
    );
    rec.assert_no_media();
}

#[test]
fn callee_busy_gives_486() {
    callee_refusal("uas_busy.xml", "uac_expect_486.xml", "busy", 486);
}

#[test]
fn callee_declines_gives_603() {
    callee_refusal("uas_decline.xml", "uac_expect_603.xml", "declined", 603);
}

#[test]
fn no_answer_times_out_with_480_and_cancels_callee() {
    let server = Server::start_with(ServerConfig {
        ring_timeout_secs: 2,
        ..ServerConfig::default()
    });
    let started = now_ms();
    let callee = server.start_callee("2001", "uas_ring_forever.xml", &[]);
    let caller_run = caller("uac_expect_480.xml", "2001").run(&server);
    caller_run.assert_ok(&server, "caller expects 480 after the ring timeout");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee is CANCELled by the server");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2001", Some("2001"));
    assert_eq!(rec.disposition.as_deref(), Some("no_answer"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(480), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    assert_eq!(rec.answered_ms, None, "{rec:#?}");
    let rang = rec.ended_ms.unwrap() - rec.arrived_ms.unwrap();
    assert!(
        (1_500..8_000).contains(&rang),
        "ring timeout of 2 s but the call lasted {rang} ms: {rec:#?}"
    );
    rec.assert_no_media();
}

#[test]
fn unregistered_extension_is_unavailable() {
    let server = Server::start();
    let started = now_ms();
    let caller_run = caller("uac_expect_480.xml", "2003").run(&server);
    caller_run.assert_ok(&server, "call to unregistered 2003 → 480");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_trunk_call(&rec, &caller_run, "2003", Some("2003"));
    assert_eq!(rec.disposition.as_deref(), Some("unavailable"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(480), "{rec:#?}");
    assert_eq!(rec.b_call_id, None, "no callee leg was created: {rec:#?}");
    assert_eq!(rec.answered_ms, None, "{rec:#?}");
    assert_eq!(rec.ringing_ms, None, "nothing rang: {rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    rec.assert_no_media();
}

/// An INVITE from `from_user` at 127.0.0.1 to `to`, with `auth` if given; the final
/// answer, ACKed when it is not a 2xx.
fn invite_once(
    server: &Server,
    udp: &RawUdp,
    from_user: &str,
    to: &str,
    auth: Option<&str>,
) -> String {
    let call_id = unique("inv");
    let via = format!(
        "Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{}",
        udp.port,
        unique("b")
    );
    let from = format!("From: <sip:{from_user}@127.0.0.1>;tag={}", unique("t"));
    let uri = format!("sip:{to}@{}", server.addr());
    let mut headers = vec![
        via.clone(),
        "Max-Forwards: 70".into(),
        from.clone(),
        format!("To: <sip:{to}@127.0.0.1>"),
        format!("Call-ID: {call_id}"),
        "CSeq: 1 INVITE".into(),
        format!("Contact: <sip:{from_user}@127.0.0.1:{}>", udp.port),
    ];
    if let Some(a) = auth {
        headers.push(format!("Proxy-Authorization: {a}"));
    }
    udp.send(sip_message(&format!("INVITE {uri} SIP/2.0"), &headers, "").as_bytes());
    let answer = udp
        .recv_final(Duration::from_secs(3), &mut Vec::new())
        .unwrap_or_else(|| panic!("no answer to INVITE\n{}", server.stderr_tail(40)));
    let to_header = header(&answer, "To").expect("a response without To");
    let ack = sip_message(
        &format!("ACK {uri} SIP/2.0"),
        &[
            via,
            "Max-Forwards: 70".into(),
            from,
            format!("To: {to_header}"),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 ACK".into(),
        ],
        "",
    );
    udp.send(ack.as_bytes());
    answer
}

#[test]
fn a_stranger_is_challenged_like_a_user_and_refused_like_a_wrong_password() {
    // Only 127.0.0.2 is a trunk peer; these INVITEs come from 127.0.0.1.
    let server = Server::start_with(ServerConfig {
        trunks: vec![("carrier".into(), vec!["127.0.0.2/32".into()])],
        ..ServerConfig::default()
    });
    let udp = RawUdp::new(&server);
    let started = now_ms();
    // The same answer whether the From is an extension or not: nothing to enumerate.
    let shape = |answer: &str| {
        let challenge = header(answer, "Proxy-Authenticate").unwrap_or_default();
        let challenge = challenge.split("nonce=").next().unwrap_or("").to_string();
        (status_line(answer).to_string(), challenge)
    };
    let stranger = invite_once(&server, &udp, "+15550100", "2002", None);
    let user = invite_once(&server, &udp, "2001", "2002", None);
    assert_eq!(status_code(&stranger), Some(407), "{stranger}");
    assert_eq!(shape(&stranger), shape(&user), "{stranger}\n---\n{user}");

    // Made-up credentials get what a wrong password gets, and a refused record.
    let nonce = header(&stranger, "Proxy-Authenticate")
        .and_then(|c| {
            c.split("nonce=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .expect("a nonce");
    let made_up = format!(
        "Digest username=\"+15550100\", realm=\"switchboard\", nonce=\"{nonce}\", \
         uri=\"sip:2002@{}\", response=\"00000000000000000000000000000000\", algorithm=MD5",
        server.addr()
    );
    let refused = invite_once(&server, &udp, "+15550100", "2002", Some(&made_up));
    assert_eq!(status_code(&refused), Some(403), "{refused}");

    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_eq!(rec.disposition.as_deref(), Some("refused"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(403), "{rec:#?}");
    assert_eq!(rec.source_kind.as_deref(), Some("unknown"), "{rec:#?}");
    assert_eq!(rec.reason.as_deref(), Some("wrong credentials"), "{rec:#?}");
    assert_eq!(rec.trunk, None, "{rec:#?}");
    assert_eq!(rec.b_call_id, None, "{rec:#?}");
    assert_eq!(rec.answered_ms, None, "{rec:#?}");
    rec.assert_no_media();
}

#[test]
fn a_challenge_alone_leaves_no_call_record() {
    // An INVITE whose From is an extension is challenged with 407; if the
    // caller never retries, no call record is written.
    let server = Server::start();
    let udp = RawUdp::new(&server);
    let call_id = unique("inv");
    let via = format!(
        "Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{}",
        udp.port,
        unique("b")
    );
    let from = format!("From: <sip:2001@127.0.0.1>;tag={}", unique("t"));
    let invite = sip_message(
        &format!("INVITE sip:2002@{} SIP/2.0", server.addr()),
        &[
            via.clone(),
            "Max-Forwards: 70".into(),
            from.clone(),
            "To: <sip:2002@127.0.0.1>".into(),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 INVITE".into(),
            format!("Contact: <sip:2001@127.0.0.1:{}>", udp.port),
        ],
        "",
    );
    udp.send(invite.as_bytes());
    let mut others = Vec::new();
    let answer = udp
        .recv_final(Duration::from_secs(3), &mut others)
        .unwrap_or_else(|| panic!("no answer to INVITE\n{}", server.stderr_tail(40)));
    assert_eq!(status_code(&answer), Some(407), "{answer}");
    assert!(
        header(&answer, "Proxy-Authenticate").is_some_and(|v| v.starts_with("Digest")),
        "407 without a Digest Proxy-Authenticate:\n{answer}"
    );
    // ACK the 407 (same branch, To with the server's tag) so it stops retransmitting
    let to = header(&answer, "To").expect("407 without To");
    let ack = sip_message(
        &format!("ACK sip:2002@{} SIP/2.0", server.addr()),
        &[
            via,
            "Max-Forwards: 70".into(),
            from,
            format!("To: {to}"),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 ACK".into(),
        ],
        "",
    );
    udp.send(ack.as_bytes());
    std::thread::sleep(Duration::from_millis(700));
    match server.calls() {
        Ok(rows) => assert!(
            rows.is_empty(),
            "a bare 407 produced call records: {rows:#?}"
        ),
        Err(e) => assert!(
            e.contains("does not exist") || e.contains("no such table"),
            "cannot read the calls table: {e}"
        ),
    }
}

#[test]
fn hold_and_resume_reinvites_reach_the_callee_with_their_direction() {
    let server = Server::start();
    let callee = server.start_callee("2001", "uas_answer_reinvite.xml", &[]);
    // The caller's scenario checks the relayed answers (a=recvonly while held, then
    // a=sendrecv, both anchored at 127.0.0.1); the callee's checks the relayed offers.
    let caller_run = caller("uac_call_hold.xml", "2001").run(&server);
    caller_run.assert_ok(&server, "hold and resume by re-INVITE");
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "callee sees sendonly then sendrecv re-INVITEs");

    // Each re-INVITE the callee got is a new request in the same dialog: CSeq grows and
    // our o= version moves on only when the media changed.
    let invites = callee_run.received("INVITE ");
    assert_eq!(invites.len(), 3, "{}", callee_run.report());
    let version = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("o=switchboard "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no o=switchboard line:\n{m}"))
    };
    let (v1, v2, v3) = (
        version(&invites[0]),
        version(&invites[1]),
        version(&invites[2]),
    );
    assert_eq!((v2, v3), (v1 + 1, v1 + 2), "o= versions {v1}, {v2}, {v3}");
    let cseqs: Vec<&str> = invites.iter().filter_map(|m| header(m, "CSeq")).collect();
    assert_eq!(cseqs, vec!["1 INVITE", "2 INVITE", "3 INVITE"]);

    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
}

#[test]
fn answered_call_over_ipv6_with_media_through_the_server() {
    let server = Server::start_with(ServerConfig {
        ipv6: true,
        trunks: vec![("loopback6".into(), vec!["::1/128".into()])],
        ..ServerConfig::default()
    });
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller_run = caller("uac_call.xml", "2001")
        .local_ip("::1")
        .duration_ms(TALK_MS)
        .run(&server);
    caller_run.assert_ok(&server, "IPv6 trunk call to 2001");
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "IPv6 callee");
    let ok = caller_run.received("SIP/2.0 200");
    assert!(
        ok.iter().any(|m| m.contains("c=IN IP6 ::1")),
        "the answer must anchor media on ::1:\n{}",
        caller_run.report()
    );
    let rec = server.single_call();
    assert_eq!(rec.trunk.as_deref(), Some("loopback6"), "{rec:#?}");
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    rec.assert_media_both_ways(10);
}

#[test]
fn sigterm_drains_calls_in_progress_and_refuses_new_ones() {
    let mut server = Server::start_with(ServerConfig {
        drain_timeout_secs: 30,
        ..ServerConfig::default()
    });
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    // A 4 s call is in progress when SIGTERM arrives.
    let in_progress = caller("uac_call.xml", "2001")
        .duration_ms(4_000)
        .spawn(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stderr().matches("answered").count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "call not answered\n{}",
            server.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.is_running(),
        "the server must wait for the call in progress"
    );

    let refused = caller("uac_expect_503.xml", "2001").run(&server);
    refused.assert_ok(&server, "a new call while draining gets 503");

    in_progress
        .wait(Duration::from_secs(15))
        .assert_ok(&server, "the call in progress finishes normally");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee of the drained call");
    let exit = server
        .terminate(Duration::from_secs(10))
        .expect("server exits once drained");
    assert!(exit.success(), "exit status {exit}");

    let mut rows = server.calls().expect("call records");
    rows.sort_by_key(|r| r.arrived_ms);
    let dispositions: Vec<_> = rows
        .iter()
        .map(|r| (r.disposition.clone(), r.final_code))
        .collect();
    assert_eq!(
        dispositions,
        vec![
            (Some("answered".into()), Some(200)),
            (Some("refused".into()), Some(503))
        ],
        "{rows:#?}"
    );
}

#[test]
fn a_finished_call_record_survives_kill_9() {
    let mut server = Server::start();
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    caller("uac_call.xml", "2001")
        .duration_ms(500)
        .run(&server)
        .assert_ok(&server, "short answered call");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee");
    // The record is durable once the call has ended: no grace period, no clean shutdown.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = server.terminate(Duration::from_secs(5));
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
}

#[test]
fn check_reports_every_config_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "sip:\n  listen: [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\nrtp:\n  ports: \"20000\"\n\
         trunks:\n  - name: carrier\n    peers: [\"203.0.113.0/33\"]\nusers:\n  - { extension: \"2001\", password: secret2001 }\n\
         dids:\n  - { number: \"100\", extension: \"2010\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(switchboard_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run switchboard check");
    assert!(!out.status.success(), "check must fail on errors");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{file}:2:34: transport \"sctp\" is not supported"),
        format!("{file}:4:10: \"20000\" is not a port range"),
        format!("{file}:7:13: \"203.0.113.0/33\" is not an address or CIDR block"),
        format!("{file}:11:33: DID 100 goes to extension \"2010\", which is not a configured user (did you mean \"2001\"?)"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "got {line:?}\nwant {want:?}"
        );
    }
    // The shipped demo configuration is valid.
    let demo = std::process::Command::new(switchboard_bin())
        .args(["check", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/switchboard.yaml"
        ))
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
}

#[test]
fn the_callee_holding_the_caller_plays_music_on_hold_to_it() {
    // The prompt root (music on hold) comes from the repository.
    let server = Server::start_with(ServerConfig {
        ivr: Some((
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ivr-flows"),
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        )),
        ..ServerConfig::default()
    });
    let callee = server.start_callee("2001", "uas_answer_hold_resume.xml", &[]);
    // The caller keeps talking and waits for the callee's BYE.
    let caller_run = caller("uac_call_wait_bye.xml", "2001").run(&server);
    caller_run.assert_ok(&server, "caller held and resumed by the callee");
    callee.wait(Duration::from_secs(15)).assert_ok(
        &server,
        "callee: hold answered recvonly, resume answered sendrecv",
    );
    // The hold was handled here: the caller never saw a re-INVITE, and heard music.
    assert_eq!(
        caller_run.received("INVITE ").len(),
        0,
        "{}",
        caller_run.report()
    );
    assert!(
        server.stderr().contains("music on hold"),
        "{}",
        server.stderr_tail(20)
    );
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("callee"), "{rec:#?}");
    // Audio flowed both ways before the hold and after the resume.
    rec.assert_media_both_ways(10);
}

#[test]
fn an_agent_transfers_the_caller_blind_with_refer() {
    let server = Server::start_with(ServerConfig {
        ivr: Some((
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ivr-flows"),
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        )),
        ..ServerConfig::default()
    });
    let first = server.start_callee("2001", "uas_answer_then_refer.xml", &[]);
    let second = server.start_callee("2002", "uas_answer_then_bye.xml", &["-d", "2000"]);
    let caller_run = caller("uac_call_wait_bye.xml", "2001").run(&server);
    caller_run.assert_ok(&server, "caller transferred from 2001 to 2002");
    first
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2001: REFER accepted, NOTIFY 200, then hung up");
    second
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2002 answers the transferred caller");
    assert_eq!(
        caller_run.received("INVITE ").len(),
        0,
        "the caller saw nothing of it"
    );
    let rec = server.single_call();
    assert_eq!(rec.target.as_deref(), Some("2002"), "{rec:#?}");
    assert_eq!(
        rec.reason.as_deref(),
        Some("transferred by 2001 to 2002"),
        "{rec:#?}"
    );
    assert_eq!(rec.hangup_by.as_deref(), Some("callee"), "{rec:#?}");
    rec.assert_media_both_ways(10);
}

#[test]
fn an_answered_call_without_rtp_is_hung_up_at_the_media_timeout_but_not_while_on_hold() {
    let server = Server::start_with(ServerConfig {
        rtp_timeout_secs: Some(2),
        ..ServerConfig::default()
    });
    // The caller plays a few seconds of speech (echoed back by the callee), then both
    // fall silent: Switchboard hangs both legs up.
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    caller("uac_call_wait_bye.xml", "2001")
        .run(&server)
        .assert_ok(&server, "the caller is hung up on");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "the callee is hung up on");
    let rec = server.single_call();
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    let reason = rec.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("media timeout: no RTP from the ") && reason.ends_with(" for 2 s"),
        "{rec:#?}"
    );
    rec.assert_media_both_ways(10);

    // Silent for 3 s, but on hold (sendonly, answered recvonly): left alone; the caller
    // ends the call itself after resuming.
    let server = Server::start_with(ServerConfig {
        rtp_timeout_secs: Some(2),
        ..ServerConfig::default()
    });
    let callee = server.start_callee("2001", "uas_answer_reinvite.xml", &[]);
    caller("uac_call_long_hold.xml", "2001")
        .duration_ms(3_000)
        .run(&server)
        .assert_ok(&server, "a long hold with no RTP, then resume and BYE");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee");
    let rec = server.single_call();
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert_eq!(rec.reason, None, "{rec:#?}");
}

#[test]
fn a_phone_whose_contact_is_another_port_than_its_register_is_rung_at_its_contact() {
    // RFC 3261 §10: requests go to the registered Contact. The REGISTER comes from one
    // port (as from an IP-PBX or a test rig); the phone listens on another.
    let server = Server::start();
    let register_from = alloc_ports(1);
    let phone_port = alloc_ports(1);
    Sipp::new("register_contact.xml")
        .service("2002")
        .auth("2002", "secret2002")
        .local_port(register_from)
        .args(&["-key", "contact_port", &phone_port.to_string()])
        .run(&server)
        .assert_ok(&server, "REGISTER with a Contact on another port");
    let phone = Sipp::new("uas_answer.xml")
        .local_port(phone_port)
        .media_port(alloc_ports(4))
        .timeout_secs(30)
        .args(&["-rtp_echo"])
        .no_remote()
        .spawn(&server);
    caller("uac_call.xml", "2002")
        .duration_ms(1000)
        .run(&server)
        .assert_ok(&server, "call to 2002");
    phone
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "the phone on its Contact port answered");
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
}
