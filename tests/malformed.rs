//! Malformed and torture SIP input over plain UDP and TCP sockets.
//!
//! Rule used throughout: when the request line parses and a Via is present the
//! server can answer, and it must answer 400 (Bad Request) to a broken request;
//! otherwise it must stay silent. Afterwards it must still answer OPTIONS and
//! complete a call. Some RFC 4475 torture messages (adapted so every address is
//! 127.0.0.1) check that valid-but-odd syntax, such as compact header names, is
//! understood.

mod common;

use std::time::Duration;

use common::*;

const ANSWER_WAIT: Duration = Duration::from_secs(2);
const SILENCE_WAIT: Duration = Duration::from_millis(800);

/// Headers of a well-formed OPTIONS from `port`, minus the ones a case drops.
fn options_headers(port: u16, branch: &str, call_id: &str) -> Vec<String> {
    vec![
        format!("Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport"),
        "Max-Forwards: 70".into(),
        format!("From: <sip:probe@127.0.0.1>;tag={}", unique("f")),
        "To: <sip:127.0.0.1>".into(),
        format!("Call-ID: {call_id}"),
        "CSeq: 1 OPTIONS".into(),
    ]
}

/// Sends `msg` and expects a 400 that belongs to it (same Via branch).
fn expect_400(server: &Server, udp: &RawUdp, what: &str, msg: &[u8], branch: &str) -> String {
    udp.send(msg);
    let mut provisional = Vec::new();
    let answer = udp
        .recv_final(ANSWER_WAIT, &mut provisional)
        .unwrap_or_else(|| {
            panic!(
                "{what}: no response (expected 400)\nsent:\n{}\nswitchboard stderr tail:\n{}",
                String::from_utf8_lossy(msg),
                server.stderr_tail(30)
            )
        });
    assert_eq!(
        status_code(&answer),
        Some(400),
        "{what}: expected 400\nsent:\n{}\ngot:\n{answer}",
        String::from_utf8_lossy(msg)
    );
    let via =
        header(&answer, "Via").unwrap_or_else(|| panic!("{what}: 400 without Via:\n{answer}"));
    assert!(
        via.contains(branch),
        "{what}: 400 does not echo our Via branch:\n{answer}"
    );
    answer
}

/// Sends `msg` and expects no response at all.
fn expect_silence(server: &Server, udp: &RawUdp, what: &str, msg: &[u8]) {
    udp.send(msg);
    if let Some(answer) = udp.recv(SILENCE_WAIT) {
        panic!(
            "{what}: expected no response, got:\n{answer}\nsent:\n{}\nswitchboard stderr tail:\n{}",
            String::from_utf8_lossy(msg),
            server.stderr_tail(30)
        );
    }
}

/// The server still answers OPTIONS (UDP and TCP) and, if asked, completes a call.
fn assert_still_serving(server: &mut Server, with_call: bool) {
    assert!(
        server.is_running(),
        "switchboard died\nstderr tail:\n{}",
        server.stderr_tail(60)
    );
    Sipp::new("options.xml")
        .run(server)
        .assert_ok(server, "OPTIONS over UDP after malformed input");
    Sipp::new("options.xml")
        .tcp()
        .run(server)
        .assert_ok(server, "OPTIONS over TCP after malformed input");
    if with_call {
        require_pcap();
        let callee = server.start_callee("2001", "uas_answer.xml", &[]);
        Sipp::new("uac_call.xml")
            .service("2001")
            .duration_ms(1_000)
            .run(server)
            .assert_ok(server, "a call after malformed input");
        callee
            .wait(Duration::from_secs(10))
            .assert_ok(server, "callee of the call after malformed input");
        let rows = server.wait_for_calls(1, Duration::from_secs(5));
        assert!(
            rows.iter()
                .any(|r| r.disposition.as_deref() == Some("answered")),
            "no answered call recorded: {rows:#?}"
        );
    }
}

#[test]
fn malformed_udp_requests() {
    let mut server = Server::start();
    let udp = RawUdp::new(&server);
    let ruri = format!("OPTIONS sip:{} SIP/2.0", server.addr());

    // 1. garbage: nothing to answer to
    expect_silence(
        &server,
        &udp,
        "binary garbage",
        &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x13, 0x37],
    );
    expect_silence(
        &server,
        &udp,
        "text garbage",
        b"hello there, this is not SIP\r\n\r\n",
    );
    expect_silence(&server, &udp, "a lone CRLF keep-alive", b"\r\n\r\n");

    // 2. a header line without a colon
    let branch = format!("z9hG4bK{}", unique("badhdr"));
    let mut h = options_headers(udp.port, &branch, &unique("c"));
    h.insert(3, "This line is not a header".into());
    expect_400(
        &server,
        &udp,
        "header line without colon",
        sip_message(&ruri, &h, "").as_bytes(),
        &branch,
    );

    // 3. Content-Length larger than the body (RFC 3261 18.3: 400 for a request)
    let branch = format!("z9hG4bK{}", unique("clen"));
    let mut msg = String::new();
    msg.push_str(&ruri);
    msg.push_str("\r\n");
    for line in options_headers(udp.port, &branch, &unique("c")) {
        msg.push_str(&line);
        msg.push_str("\r\n");
    }
    msg.push_str("Content-Type: application/sdp\r\nContent-Length: 500\r\n\r\nv=0\r\n");
    expect_400(
        &server,
        &udp,
        "Content-Length larger than the body",
        msg.as_bytes(),
        &branch,
    );

    // 4. truncated: the datagram stops in the middle of the headers (Via already sent)
    let branch = format!("z9hG4bK{}", unique("trunc"));
    let full = sip_message(&ruri, &options_headers(udp.port, &branch, &unique("c")), "");
    let cut = full.find("Call-ID").unwrap() + 5;
    expect_400(
        &server,
        &udp,
        "message truncated inside the headers",
        &full.as_bytes()[..cut],
        &branch,
    );
    //    truncated inside the request line: nothing to answer to
    expect_silence(
        &server,
        &udp,
        "message truncated inside the request line",
        b"OPTIONS sip:127.0",
    );

    // 5. no Call-ID
    let branch = format!("z9hG4bK{}", unique("nocid"));
    let h: Vec<String> = options_headers(udp.port, &branch, "x")
        .into_iter()
        .filter(|l| !l.starts_with("Call-ID"))
        .collect();
    expect_400(
        &server,
        &udp,
        "request without Call-ID",
        sip_message(&ruri, &h, "").as_bytes(),
        &branch,
    );

    // 6. no Via: cannot be answered
    let h: Vec<String> = options_headers(udp.port, "z9hG4bKnovia", &unique("c"))
        .into_iter()
        .filter(|l| !l.starts_with("Via"))
        .collect();
    expect_silence(
        &server,
        &udp,
        "request without Via",
        sip_message(&ruri, &h, "").as_bytes(),
    );

    // 7. a request line that is not one
    let branch = format!("z9hG4bK{}", unique("rl"));
    let h = options_headers(udp.port, &branch, &unique("c"));
    expect_silence(
        &server,
        &udp,
        "broken request line",
        sip_message("OPTIONS", &h, "").as_bytes(),
    );

    // 8. a response that belongs to no transaction: dropped silently
    let h = options_headers(udp.port, "z9hG4bKstray", &unique("c"));
    expect_silence(
        &server,
        &udp,
        "stray response",
        sip_message("SIP/2.0 200 OK", &h, "").as_bytes(),
    );

    // 9. an INVITE with a broken header: must not become a call
    let branch = format!("z9hG4bK{}", unique("inv"));
    let call_id = unique("badinv");
    let h = vec![
        format!(
            "Via: SIP/2.0/UDP 127.0.0.1:{};branch={branch};rport",
            udp.port
        ),
        "Max-Forwards: 70".into(),
        format!("From: <sip:+15550100@127.0.0.1>;tag={}", unique("f")),
        "To: <sip:2001@127.0.0.1>".into(),
        format!("Call-ID: {call_id}"),
        "CSeq: notanumber INVITE".into(),
    ];
    expect_400(
        &server,
        &udp,
        "INVITE with a non-numeric CSeq",
        sip_message(
            &format!("INVITE sip:2001@{} SIP/2.0", server.addr()),
            &h,
            "",
        )
        .as_bytes(),
        &branch,
    );

    assert_still_serving(&mut server, true);
    let rows = server.calls().unwrap_or_default();
    assert!(
        rows.iter()
            .all(|r| r.a_call_id.as_deref() != Some(call_id.as_str())),
        "the malformed INVITE produced a call record: {rows:#?}"
    );
}

#[test]
fn malformed_tcp_input() {
    let mut server = Server::start();

    // a broken request on a TCP connection is answered 400 on that connection
    let mut tcp = RawTcp::connect(&server);
    let branch = format!("z9hG4bK{}", unique("tcpbad"));
    let mut h: Vec<String> = options_headers(tcp.port, &branch, &unique("c"))
        .into_iter()
        .map(|l| l.replace("SIP/2.0/UDP", "SIP/2.0/TCP"))
        .collect();
    h.insert(2, "No colon on this line".into());
    tcp.send(
        sip_message(
            &format!("OPTIONS sip:{};transport=tcp SIP/2.0", server.addr()),
            &h,
            "",
        )
        .as_bytes(),
    );
    let answer = tcp
        .recv(ANSWER_WAIT)
        .unwrap_or_else(|| panic!("no 400 over TCP\n{}", server.stderr_tail(30)));
    assert_eq!(status_code(&answer), Some(400), "{answer}");

    // garbage on a TCP connection: no SIP answer (closing the connection is fine)
    let mut tcp = RawTcp::connect(&server);
    tcp.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage that is not SIP\r\n\r\n");
    if let Some(answer) = tcp.recv(SILENCE_WAIT) {
        panic!("TCP garbage got an answer:\n{answer}");
    }

    // a message cut short, then the connection closed half-way
    let mut tcp = RawTcp::connect(&server);
    tcp.send(
        format!(
            "INVITE sip:2001@{} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{}",
            server.addr(),
            tcp.port
        )
        .as_bytes(),
    );
    drop(tcp);

    // a Content-Length bigger than what follows just waits for more bytes on
    // a stream; the next valid message on a NEW connection is served
    let mut tcp = RawTcp::connect(&server);
    let mut msg = format!("OPTIONS sip:{};transport=tcp SIP/2.0\r\n", server.addr());
    for line in options_headers(tcp.port, "z9hG4bKpartial", &unique("c")) {
        msg.push_str(&line.replace("SIP/2.0/UDP", "SIP/2.0/TCP"));
        msg.push_str("\r\n");
    }
    msg.push_str("Content-Length: 100000\r\n\r\nshort");
    tcp.send(msg.as_bytes());

    // an oversized flood of header bytes without an end must not take the server down
    let mut flood = RawTcp::connect(&server);
    flood
        .stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut big = format!("OPTIONS sip:{} SIP/2.0\r\nX-Flood: ", server.addr()).into_bytes();
    big.extend(std::iter::repeat_n(b'a', 512 * 1024));
    let _ = std::io::Write::write_all(&mut flood.stream, &big);

    assert_still_serving(&mut server, true);
    drop(tcp);
    drop(flood);
}

/// RFC 4475 3.1.1.1 ("A Short Tortuous INVITE"), adapted: all addresses are
/// 127.0.0.1, the top Via is ours, no To tag (so it is a new call), and the
/// Request-URI is DID 2003, whose extension is not registered. Compact names
/// (t, f, i, l, v, m, s), odd case, LWS around colons, folded lines and a
/// comma-joined Via must all be understood: the call is routed and refused
/// with 480, never 400.
#[test]
fn rfc4475_short_tortuous_invite_with_compact_headers() {
    let server = Server::start();
    let udp = RawUdp::new(&server);
    let call_id = format!("wsinv.{}@127.0.0.1", unique("t"));
    let branch = format!("z9hG4bK{}", unique("tort"));
    let sdp = "v=0\r\no=mhandley 29739 7272939 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
               t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";
    let msg = format!(
        "INVITE sip:2003@{addr};unknownparam SIP/2.0\r\n\
         t  :\r\n sip:2003@{addr}\r\n\
         f   : \"J Rosenberg \\\\\\\"\"       <sip:+15550100@127.0.0.1>\r\n  ;\r\n  tag = 98asjd8\r\n\
         MaX-fOrWaRdS: 0068\r\n\
         i: {call_id}\r\n\
         l   : {len}\r\n\
         cseq: 0009\r\n  INVITE\r\n\
         v  : SIP  /   2.0\r\n /UDP\r\n    127.0.0.1:{port};rport;branch={branch}  ,\r\n \
         SIP  /    2.0   / UDP  127.0.0.1:{port}   ; branch=\r\n z9hG4bK30239\r\n\
         s :\r\n\
         NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
         UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\
         c: application/sdp\r\n\
         m:\"Quoted string \\\"\\\"\" <sip:+15550100@127.0.0.1:{port}> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\
         \r\n{sdp}",
        addr = server.addr(),
        port = udp.port,
        len = sdp.len(),
    );
    udp.send(msg.as_bytes());
    let mut provisional = Vec::new();
    let answer = udp
        .recv_final(Duration::from_secs(5), &mut provisional)
        .unwrap_or_else(|| {
            panic!(
                "no final response to the tortuous INVITE\nsent:\n{msg}\nstderr:\n{}",
                server.stderr_tail(40)
            )
        });
    assert_eq!(
        status_code(&answer),
        Some(480),
        "tortuous INVITE to unregistered 2003 should be routed and get 480\nsent:\n{msg}\ngot:\n{answer}"
    );
    assert_eq!(
        header(&answer, "Call-ID"),
        Some(call_id.as_str()),
        "{answer}"
    );
    assert!(
        header(&answer, "Via").is_some_and(|v| v.contains(&branch)),
        "response must echo the top Via:\n{answer}"
    );
    // both Via values come back, in order
    let vias: Vec<&str> = answer
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| {
            let n = l.split(':').next().unwrap_or("").trim();
            n.eq_ignore_ascii_case("via") || n.eq_ignore_ascii_case("v")
        })
        .collect();
    let joined = vias.join(",");
    assert!(
        joined.contains(&branch) && joined.contains("z9hG4bK30239"),
        "both Via values must be echoed:\n{answer}"
    );
    // ACK the 480
    let to = header(&answer, "To").expect("To");
    let ack = sip_message(
        &format!("ACK sip:2003@{} SIP/2.0", server.addr()),
        &[
            format!(
                "Via: SIP/2.0/UDP 127.0.0.1:{};rport;branch={branch}",
                udp.port
            ),
            "Max-Forwards: 70".into(),
            "From: <sip:+15550100@127.0.0.1>;tag=98asjd8".into(),
            format!("To: {to}"),
            format!("Call-ID: {call_id}"),
            "CSeq: 9 ACK".into(),
        ],
        "",
    );
    udp.send(ack.as_bytes());

    let rec = server.single_call();
    assert_eq!(rec.a_call_id.as_deref(), Some(call_id.as_str()), "{rec:#?}");
    assert_eq!(rec.from_user.as_deref(), Some("+15550100"), "{rec:#?}");
    assert_eq!(rec.did.as_deref(), Some("2003"), "{rec:#?}");
    assert_eq!(rec.disposition.as_deref(), Some("unavailable"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(480), "{rec:#?}");
}

/// Valid RFC 4475 oddities on OPTIONS: each must get 200.
#[test]
fn rfc4475_valid_oddities_get_200() {
    let mut server = Server::start();
    let udp = RawUdp::new(&server);
    let addr = server.addr();
    let port = udp.port;

    let cases: Vec<(&str, String)> = vec![
        (
            // 3.1.1.6: no LWS between display name and <
            "lwsdisp",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nTo: sip:{addr}\r\nFrom: caller<sip:caller@127.0.0.1>;tag=323\r\n\
                 Max-Forwards: 70\r\nCall-ID: lwsdisp.{u}@127.0.0.1\r\nCSeq: 2 OPTIONS\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKkdjuw{u};rport\r\nl: 0\r\n\r\n",
                u = unique("")
            ),
        ),
        (
            // 3.1.1.9: semicolons and escapes in the user part of the Request-URI
            "semiuri",
            format!(
                "OPTIONS sip:user;par=u%40example.net@{addr} SIP/2.0\r\nTo: sip:j_user@{addr}\r\n\
                 From: sip:caller@127.0.0.1;tag=33242\r\nMax-Forwards: 3\r\nCall-ID: semiuri.{u}\r\n\
                 CSeq: 8 OPTIONS\r\nAccept: application/sdp, application/pkcs7-mime,\r\n \
                 multipart/mixed, multipart/signed,\r\n message/sip, message/sipfrag\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKkdjuw{u};rport\r\nl: 0\r\n\r\n",
                u = unique("")
            ),
        ),
        (
            // 3.1.1.7-style: long header values and many parameters
            "longreq",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nTo: \"I have a user name of {long} proportion\" <sip:{addr}>\r\n\
                 From: sip:caller@127.0.0.1;tag={long}\r\nCall-ID: longreq.{long}\r\nCSeq: 1 OPTIONS\r\n\
                 Max-Forwards: 70\r\nX-Long: {long}\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{u};rport;{params}\r\nContent-Length: 0\r\n\r\n",
                long = "very".repeat(250),
                u = unique(""),
                params = (0..60).map(|i| format!("p{i}=v{i}")).collect::<Vec<_>>().join(";")
            ),
        ),
        (
            // 3.1.1.8: extra octets after the message in one datagram are ignored
            "dblreq",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nTo: sip:{addr}\r\nFrom: sip:caller@127.0.0.1;tag=8903j\r\n\
                 Max-Forwards: 70\r\nCall-ID: dblreq.{u}\r\nCSeq: 1 OPTIONS\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdbl{u};rport\r\nContent-Length: 0\r\n\r\n\
                 INVITE sip:2001@{addr} SIP/2.0\r\nTo: sip:2001@{addr}\r\nFrom: sip:caller@127.0.0.1;tag=8903k\r\n\
                 Max-Forwards: 70\r\nCall-ID: dblreq-second.{u}\r\nCSeq: 1 INVITE\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdbl2{u};rport\r\nContent-Length: 0\r\n\r\n",
                u = unique("")
            ),
        ),
    ];
    // every case is tried; the failures are reported together
    let mut failures = Vec::new();
    for (name, msg) in &cases {
        udp.send(msg.as_bytes());
        let mut provisional = Vec::new();
        let Some(answer) = udp.recv_final(ANSWER_WAIT, &mut provisional) else {
            failures.push(format!("{name}: no response (expected 200)\nsent:\n{msg}"));
            continue;
        };
        if status_code(&answer) != Some(200) {
            failures.push(format!(
                "{name}: expected 200\nsent:\n{msg}\ngot:\n{answer}"
            ));
        } else if !header(&answer, "CSeq").is_some_and(|c| c.ends_with("OPTIONS")) {
            failures.push(format!("{name}: answer is not for the OPTIONS:\n{answer}"));
        }
        // dblreq: the trailing INVITE must have been discarded
        let extra = udp.drain(Duration::from_millis(500));
        if !extra.is_empty() {
            failures.push(format!(
                "{name}: unexpected extra messages (trailing bytes must be discarded): {extra:#?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid RFC 4475 messages mishandled:\n\n{}\n\nswitchboard stderr (tail):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        server.stderr_tail(30)
    );
    assert_still_serving(&mut server, false);
    let rows = server.calls().unwrap_or_default();
    assert!(
        rows.is_empty(),
        "the trailing INVITE of dblreq became a call: {rows:#?}"
    );
}

/// Invalid RFC 4475 (3.1.2) messages: 400 (505 for an unknown version; an
/// unterminated quote may be repaired and served).
#[test]
fn rfc4475_invalid_messages_get_400() {
    let mut server = Server::start();
    let udp = RawUdp::new(&server);
    let addr = server.addr();
    let port = udp.port;
    let via = |b: &str| format!("Via: SIP/2.0/UDP 127.0.0.1:{port};branch={b};rport");

    let cases: Vec<(&str, String, String, &[u16])> = {
        let mut v: Vec<(&str, String, String, &[u16])> = Vec::new();
        // 3.1.2.3: negative Content-Length
        let b = format!("z9hG4bKncl{}", unique(""));
        v.push((
            "ncl",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nMax-Forwards: 70\r\nTo: sip:{addr}\r\nFrom: sip:caller@127.0.0.1;tag=1\r\n\
                 Call-ID: ncl.{u}\r\nCSeq: 1 OPTIONS\r\n{via}\r\nContent-Length: -999\r\n\r\n",
                u = unique(""),
                via = via(&b)
            ),
            b,
            &[400],
        ));
        // 3.1.2.4: scalar fields with overlarge values
        let b = format!("z9hG4bKscalar{}", unique(""));
        v.push((
            "scalar02",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\n{via}\r\nCSeq: 36893488147419103232 OPTIONS\r\nMax-Forwards: 300\r\n\
                 To: sip:{addr}\r\nFrom: sip:caller@127.0.0.1;tag=239232jh3\r\nCall-ID: scalar02.{u}\r\n\
                 Content-Length: 0\r\n\r\n",
                u = unique(""),
                via = via(&b)
            ),
            b,
            &[400],
        ));
        // 3.1.2.6: unterminated quoted string in the display name (RFC 4475
        // allows inferring the closing quote instead of answering 400)
        let b = format!("z9hG4bKquot{}", unique(""));
        v.push((
            "quotbal",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nTo: \"Mr. J. User <sip:j.user@{addr}>\r\nFrom: sip:caller@127.0.0.1;tag=93334\r\n\
                 Max-Forwards: 10\r\nCall-ID: quotbal.{u}\r\nCSeq: 1 OPTIONS\r\n{via}\r\nContent-Length: 0\r\n\r\n",
                u = unique(""),
                via = via(&b)
            ),
            b,
            &[400, 200],
        ));
        // 3.1.2.12: several values in single-value fields
        let b = format!("z9hG4bKmulti{}", unique(""));
        v.push((
            "multi01",
            format!(
                "OPTIONS sip:{addr} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\nCSeq: 1 OPTIONS\r\n\
                 Call-ID: multi01.{u}\r\nCall-ID: multi01.second.{u}\r\nTo: sip:{addr}\r\n\
                 From: sip:caller@127.0.0.1;tag=3413as\r\nFrom: sip:other@127.0.0.1;tag=2443a\r\nContent-Length: 0\r\n\r\n",
                u = unique(""),
                via = via(&b)
            ),
            b,
            &[400],
        ));
        // 3.1.2.16: unknown protocol version
        let b = format!("z9hG4bKvers{}", unique(""));
        v.push((
            "badvers",
            format!(
                "OPTIONS sip:{addr} SIP/7.0\r\n{via}\r\nMax-Forwards: 70\r\nTo: sip:{addr}\r\n\
                 From: sip:caller@127.0.0.1;tag=34525\r\nCall-ID: badvers.{u}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                u = unique(""),
                via = via(&b)
            ),
            b,
            &[505, 400],
        ));
        v
    };
    let mut failures = Vec::new();
    for (name, msg, branch, allowed) in &cases {
        udp.send(msg.as_bytes());
        let mut provisional = Vec::new();
        let Some(answer) = udp.recv_final(ANSWER_WAIT, &mut provisional) else {
            failures.push(format!(
                "{name}: no response (expected {allowed:?})\nsent:\n{msg}"
            ));
            continue;
        };
        let code = status_code(&answer).unwrap_or(0);
        if !allowed.contains(&code) {
            failures.push(format!(
                "{name}: expected {allowed:?}, got:\n{answer}\nsent:\n{msg}"
            ));
        } else if !header(&answer, "Via").is_some_and(|v| v.contains(branch.as_str())) {
            failures.push(format!("{name}: response does not echo our Via:\n{answer}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid RFC 4475 messages mishandled:\n\n{}\n\nswitchboard stderr (tail):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        server.stderr_tail(30)
    );
    assert_still_serving(&mut server, false);
}
