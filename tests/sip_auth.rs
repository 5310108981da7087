//! Digest authentication against guessing and replay, over real UDP from two loopback
//! addresses: a replayed Authorization header is challenged again, never accepted; a
//! phone reusing its nonce with the next count is fine; twenty wrong passwords lock the
//! guesser out for the configured time while the user registers from another address;
//! `/metrics` counts all of it.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::api::{sample, Api, REPORTING};
use common::digest;
use common::*;

const WAIT: Duration = Duration::from_secs(3);

/// A phone registering 2001 by hand, from its own address.
struct Phone {
    udp: RawUdp,
    uri: String,
    call_id: String,
    cseq: u32,
}

impl Phone {
    fn new(server: &Server, ip: Ipv4Addr) -> Phone {
        Phone {
            udp: RawUdp::on(server, ip),
            uri: format!("sip:{}", server.addr()),
            call_id: unique("auth"),
            cseq: 0,
        }
    }

    fn register(&mut self, authorization: Option<&str>) -> String {
        self.cseq += 1;
        let local = self.udp.sock.local_addr().unwrap();
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:2001@{host}>;tag=p{cseq}\r\n\
             To: <sip:2001@{host}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:2001@{local}>\r\n\
             Expires: 60\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            uri = self.uri,
            host = self.uri.trim_start_matches("sip:"),
            branch = unique("b"),
            cseq = self.cseq,
            call_id = self.call_id,
        );
        self.udp.send(msg.as_bytes());
        self.udp
            .recv_final(WAIT, &mut Vec::new())
            .expect("no final response to REGISTER")
    }

    /// REGISTER, challenge, answer with `password` (count 1); the final answer, and the
    /// header sent with its nonce.
    fn login(&mut self, password: &str) -> (u16, String, String) {
        let challenge = self.register(None);
        assert_eq!(status_code(&challenge), Some(401), "{challenge}");
        let nonce = digest::nonce(&challenge).to_string();
        let header = self.answer(&nonce, password, 1);
        let reply = self.register(Some(&header));
        (status_code(&reply).unwrap(), header, nonce)
    }

    fn answer(&self, nonce: &str, password: &str, nc: u32) -> String {
        digest::register_answer("2001", password, &self.uri, nonce, nc)
    }
}

fn server(lockout_secs: u64) -> Server {
    Server::start_with(ServerConfig {
        api: true,
        extra_sip: vec![format!(
            "auth_lockout: {{ after: 20, secs: {lockout_secs}, scope: user_and_address }}"
        )],
        ..ServerConfig::default()
    })
}

#[test]
fn a_replayed_authorization_is_challenged_again_and_a_counted_reuse_is_accepted() {
    let server = server(60);
    let mut phone = Phone::new(&server, Ipv4Addr::LOCALHOST);
    let (code, header, nonce) = phone.login("secret2001");
    assert_eq!(code, 200, "the right password registers");

    // The same header again (as anyone who saw it on the wire could send it).
    let replay = phone.register(Some(&header));
    assert_eq!(
        status_code(&replay),
        Some(401),
        "a replay must not register:\n{replay}"
    );
    assert!(replay.contains("WWW-Authenticate"), "{replay}");
    // From another address too.
    let mut other = Phone::new(&server, Ipv4Addr::new(127, 0, 0, 3));
    let replay = other.register(Some(&header));
    assert_eq!(status_code(&replay), Some(401), "{replay}");

    // The phone itself may reuse its nonce with the next count.
    let next = phone.answer(&nonce, "secret2001", 2);
    let reply = phone.register(Some(&next));
    assert_eq!(status_code(&reply), Some(200), "{reply}");

    let metrics = Api::new(&server).get("/metrics", REPORTING).text;
    assert_eq!(sample(&metrics, "switchboard_sip_auth_replays_total"), 2.0);
    assert_eq!(sample(&metrics, "switchboard_sip_auth_failures_total"), 0.0);
}

#[test]
fn twenty_wrong_passwords_lock_the_guesser_out_for_a_while_and_not_the_user_at_its_desk() {
    let lockout = 4;
    let server = server(lockout);
    let mut guesser = Phone::new(&server, Ipv4Addr::LOCALHOST);
    for i in 0..20 {
        let (code, _, _) = guesser.login(&format!("guess{i}"));
        assert_eq!(code, 403, "guess {i}");
    }
    // Now even the right password from the guesser's address is refused, as a wrong one is.
    let (code, _, _) = guesser.login("secret2001");
    assert_eq!(code, 403, "the locked-out address registered");

    // The user's own phone, elsewhere, registers.
    let mut desk = Phone::new(&server, Ipv4Addr::new(127, 0, 0, 3));
    let (code, _, _) = desk.login("secret2001");
    assert_eq!(code, 200, "the user at another address was locked out too");

    let metrics = Api::new(&server).get("/metrics", REPORTING).text;
    assert_eq!(
        sample(&metrics, "switchboard_sip_auth_failures_total"),
        20.0
    );
    // 2001 at 127.0.0.1, and 127.0.0.1 itself.
    assert_eq!(sample(&metrics, "switchboard_sip_auth_lockouts_total"), 2.0);
    assert_eq!(
        sample(&metrics, "switchboard_sip_auth_refused_locked_total"),
        1.0
    );
    assert_eq!(sample(&metrics, "switchboard_sip_auth_locked"), 2.0);
    assert!(
        server.stderr().contains("locked out for password guessing"),
        "the lock-out is not in the log"
    );

    // The configured time later, the address may try again.
    std::thread::sleep(Duration::from_secs(lockout + 1));
    let (code, _, _) = guesser.login("secret2001");
    assert_eq!(code, 200, "still locked out after {lockout} s");
}
