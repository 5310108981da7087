//! A phone at home, behind a router that masquerades its address and port: its REGISTER
//! comes from the router's public address while its Contact names its private one. The
//! server sees the NAT (RFC 3261 routing to the Contact would reach nobody: the private
//! network is a blackhole from the server's host) and sends the call to the public
//! address the REGISTER came from, where the router's mapping leads to the phone.

mod common;

use std::time::Duration;

use common::nat::{self, Nat};
use common::phone::Phone;
use common::*;

#[test]
fn a_baresip_phone_behind_nat_is_reached_at_its_public_address() {
    let nat = Nat::new();
    let server = Server::start_with(ServerConfig {
        public_ip: Some(nat::SERVER_IP.into()),
        ..ServerConfig::default()
    });
    let phone = Phone::agent(&server, "2001")
        .behind(&nat)
        .auto_answer()
        .start(&server);
    // Registered from the router's public side, with a port the NAT made up.
    let registered = server
        .stderr()
        .lines()
        .find(|l| l.contains("registered") && l.contains("user=2001"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        registered.contains(&format!("from={}:41", nat::PUBLIC_IP)),
        "the REGISTER should come from the NAT's public address and port: {registered:?}\n{}",
        server.stderr_tail(30)
    );

    // A trunk call to 2001 rings the phone through the router and is answered.
    let caller = Sipp::new("uac_call.xml")
        .service("2001")
        .duration_ms(3_000)
        .run(&server);
    caller.assert_ok(&server, "trunk call to the phone behind NAT");
    phone.wait_closed(Duration::from_secs(10));
    assert_eq!(phone.calls_established(), 1, "{}", phone.log_tail(30));
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    // Media both ways: the phone's RTP came out of the router to our advertised address.
    rec.assert_media_both_ways(50);
}
