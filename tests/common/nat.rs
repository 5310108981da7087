//! A home router for tests: a phone on a private network behind masquerading NAT, built
//! from network namespaces, so the server sees what it sees from a phone at home.
//!
//! ```text
//!  this host (the server)        "router" namespace             "phone" namespace
//!  203.0.113.1 ─── veth ─── 203.0.113.2  NAT  192.168.77.1 ─── veth ─── 192.168.77.2
//! ```
//!
//! The router masquerades everything leaving towards the server to 203.0.113.2 with a
//! source port from 41000–41999, so neither the phone's address nor its port survives.
//! The private network is a blackhole from this host: a request sent to the phone's own
//! Contact goes nowhere, and only the public address reaches it.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); fails saying so otherwise.
//! Everything is removed on drop.

use std::process::Command;

use super::require_tool;

pub const SERVER_IP: &str = "203.0.113.1";
pub const PUBLIC_IP: &str = "203.0.113.2";
pub const PHONE_IP: &str = "192.168.77.2";
const PRIVATE_NET: &str = "192.168.77.0/24";

pub struct Nat {
    /// The phone's namespace (run its programs with `ip netns exec`).
    pub phone_ns: String,
    router_ns: String,
    host_link: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed (the NAT test needs root and the iproute2 and nftables packages): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Nat {
    pub fn new() -> Nat {
        require_tool("ip", "iproute2");
        require_tool("nft", "nftables");
        let id = std::process::id() % 100_000;
        let nat = Nat {
            phone_ns: format!("sbphone{id}"),
            router_ns: format!("sbrouter{id}"),
            host_link: format!("sbwan{id}"),
        };
        // What a run that died half-way left behind goes first; from here on, drop
        // cleans up whatever was made, even when a step below fails.
        drop(Nat {
            phone_ns: nat.phone_ns.clone(),
            router_ns: nat.router_ns.clone(),
            host_link: nat.host_link.clone(),
        });
        let (r, p, h) = (&nat.router_ns, &nat.phone_ns, &nat.host_link);
        let in_r = |args: &[&str]| run(&[&["ip", "netns", "exec", r.as_str()], args].concat());
        let in_p = |args: &[&str]| run(&[&["ip", "netns", "exec", p.as_str()], args].concat());
        run(&["ip", "netns", "add", r]);
        run(&["ip", "netns", "add", p]);
        // WAN: this host ↔ the router.
        run(&[
            "ip", "link", "add", h, "type", "veth", "peer", "name", "wan", "netns", r,
        ]);
        run(&["ip", "addr", "add", &format!("{SERVER_IP}/24"), "dev", h]);
        run(&["ip", "link", "set", h, "up"]);
        in_r(&[
            "ip",
            "addr",
            "add",
            &format!("{PUBLIC_IP}/24"),
            "dev",
            "wan",
        ]);
        in_r(&["ip", "link", "set", "wan", "up"]);
        in_r(&["ip", "link", "set", "lo", "up"]);
        // LAN: the router ↔ the phone.
        in_r(&[
            "ip", "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", p,
        ]);
        in_r(&["ip", "addr", "add", "192.168.77.1/24", "dev", "lan"]);
        in_r(&["ip", "link", "set", "lan", "up"]);
        in_p(&[
            "ip",
            "addr",
            "add",
            &format!("{PHONE_IP}/24"),
            "dev",
            "eth0",
        ]);
        in_p(&["ip", "link", "set", "eth0", "up"]);
        in_p(&["ip", "link", "set", "lo", "up"]);
        in_p(&["ip", "route", "add", "default", "via", "192.168.77.1"]);
        // Masquerading, with the ports rewritten too.
        in_r(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        in_r(&["nft", "add", "table", "ip", "nat"]);
        in_r(&[
            "nft",
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        ]);
        in_r(&[
            "nft",
            "add rule ip nat post oifname wan meta l4proto udp masquerade to :41000-41999",
        ]);
        in_r(&["nft", "add rule ip nat post oifname wan masquerade"]);
        run(&["ip", "route", "replace", "blackhole", PRIVATE_NET]);
        nat
    }

    /// `ip netns exec PHONE_NS` before a command line.
    pub fn in_phone_ns(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.phone_ns.clone(),
        ]
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        for args in [
            vec!["ip", "route", "del", "blackhole", PRIVATE_NET],
            vec!["ip", "netns", "del", &self.phone_ns],
            vec!["ip", "netns", "del", &self.router_ns],
            vec!["ip", "link", "del", &self.host_link],
        ] {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        }
    }
}
