//! SIP over TLS: a baresip phone registers on the TLS port, trusting the self-signed
//! certificate the server made at its first start, and a trunk call (plain UDP) reaches
//! it over that TLS connection, answered with audio both ways. The capture of the TLS
//! port holds TLS records only: no SIP in the clear.

mod common;

use std::time::Duration;

use common::phone::Phone;
use common::*;

#[test]
fn a_phone_registered_over_tls_is_called_over_its_tls_connection() {
    let server = Server::start_with(ServerConfig {
        tls: true,
        ..ServerConfig::default()
    });
    let cert = server.data_dir().join("tls/self-signed-cert.pem");
    assert!(
        cert.is_file(),
        "no self-signed certificate at {}",
        cert.display()
    );
    assert!(
        server.stderr().contains("SELF-SIGNED"),
        "the server should say its certificate is self-signed:\n{}",
        server.stderr_tail(20)
    );
    let dir = tempfile::tempdir().unwrap();
    let capture =
        Capture::start_tcp_payloads(dir.path(), &format!("tcp port {}", server.tls_port()), 60);
    let phone = Phone::agent(&server, "2001")
        .tls()
        .auto_answer()
        .start(&server);

    let call_started = now_ms() as f64 / 1000.0;
    let caller = Sipp::new("uac_call.xml")
        .service("2001")
        .duration_ms(2_000)
        .run(&server);
    caller.assert_ok(&server, "trunk call to the phone on TLS");
    phone.wait_closed(Duration::from_secs(10));
    assert_eq!(phone.calls_established(), 1, "{}", phone.log_tail(30));
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    rec.assert_media_both_ways(50);

    let segments: Vec<_> = capture
        .finish_packets()
        .into_iter()
        .filter(|p| !p.payload.is_empty())
        .collect();
    // REGISTER (twice, with the challenge), INVITE, ACK, BYE and their answers at least.
    assert!(segments.len() >= 8, "{} TLS segments", segments.len());
    // The INVITE (and the ACK and BYE) went to the phone over its TLS connection: baresip
    // listens on UDP too, where a misrouted INVITE would also have been answered.
    let to_phone_during_call = segments
        .iter()
        .filter(|p| p.src_port == server.tls_port() && p.at >= call_started)
        .count();
    assert!(
        to_phone_during_call >= 2,
        "only {to_phone_during_call} TLS segments to the phone during the call"
    );
    let handshake = segments
        .iter()
        .any(|p| p.dst_port == server.tls_port() && p.payload.starts_with(&[0x16, 0x03]));
    assert!(handshake, "no TLS handshake from the phone");
    for p in &segments {
        let text = String::from_utf8_lossy(&p.payload);
        assert!(
            !text.contains("SIP/2.0") && !text.contains("sip:"),
            "SIP in the clear on the TLS port: {text}"
        );
    }
}
