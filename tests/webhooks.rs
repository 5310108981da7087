//! CRM webhooks with real calls: the receiving endpoint is down for 30 s and Switchboard
//! restarts while deliveries are pending; every webhook still arrives, exactly once
//! after de-duplication by its id, each with a valid, fresh signature.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::{self, Api};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "crm-shared-secret-0123";
const CALLS: u32 = 100;

#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    kind: String,
    signed: bool,
    fresh: bool,
    body: Value,
}

fn verify(header: &str, body: &str) -> (bool, bool) {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return (false, false);
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let signed = mac.verify_slice(&v1).is_ok();
    let now = now_ms() / 1000;
    (signed, (now - t).abs() <= 300)
}

/// A CRM endpoint on loopback: answers 200 to every POST and keeps what it got.
fn crm(listener: TcpListener, got: Arc<Mutex<Vec<Delivery>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let got = got.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut headers = BTreeMap::new();
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    let body = String::from_utf8(body).unwrap();
                    let (signed, fresh) = verify(
                        headers
                            .get("switchboard-signature")
                            .map(String::as_str)
                            .unwrap_or(""),
                        &body,
                    );
                    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    got.lock().unwrap().push(Delivery {
                        id: headers
                            .get("switchboard-delivery")
                            .cloned()
                            .unwrap_or_default(),
                        kind: headers
                            .get("switchboard-event")
                            .cloned()
                            .unwrap_or_default(),
                        signed,
                        fresh,
                        body: json,
                    });
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
}

#[test]
fn every_webhook_of_100_calls_arrives_once_signed_despite_a_30_s_outage_and_a_restart() {
    let crm_port = alloc_ports(1);
    let (_flows, mut server) = queue_server(
        "billing",
        &["  - { name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: 0, members: [\"2001\", \"2002\", \"2003\"] }"],
        ServerConfig {
            extra_yaml: vec![
                "webhooks:".into(),
                format!("  - {{ name: crm, url: \"http://127.0.0.1:{crm_port}/switchboard\", secret: \"{SECRET}\" }}"),
            ],
            rtp_timeout_secs: Some(0),
            rtp_port_count: 400,
            env: vec![("RUST_LOG".into(), "warn".into())],
            api: true,
            ..ServerConfig::default()
        },
    );
    let started = Instant::now();
    let agents: Vec<_> = ["2001", "2002", "2003"]
        .iter()
        .map(|ext| server.agent_phone(ext, CALLS, 300, 90))
        .collect();
    Sipp::new("uac_queue_patience.xml")
        .service("100")
        .calls(CALLS)
        .timeout_secs(90)
        .no_message_trace()
        .args(&["-r", "10", "-l", "20"])
        .run(&server)
        .assert_ok(&server, "100 callers");
    for a in agents {
        a.kill();
    }
    let rows = server.wait_for_calls(CALLS as usize, Duration::from_secs(20));
    assert_eq!(rows.len(), CALLS as usize);
    let api = Api::new(&server);
    let events = api.all_events(api::REPORTING, 0);
    let expected: BTreeSet<String> = events
        .iter()
        .filter_map(|e| {
            let kind = match e["type"].as_str()? {
                "queue.offered" => "call.offered",
                "call.answered" => "call.answered",
                "call.ended" => "call.ended",
                _ => return None,
            };
            Some(format!("{}.{kind}", e["seq"]))
        })
        .collect();
    assert!(
        expected.len() >= 3 * CALLS as usize,
        "{} webhooks expected",
        expected.len()
    );

    // The CRM comes up 30 s after the first call; Switchboard has been retrying.
    let outage = Duration::from_secs(30);
    std::thread::sleep(outage.saturating_sub(started.elapsed()));
    let got = Arc::new(Mutex::new(Vec::new()));
    crm(
        TcpListener::bind(("127.0.0.1", crm_port)).unwrap(),
        got.clone(),
    );
    // Restart Switchboard while the backlog is being delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no webhook arrived after the CRM came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.restart();
    let unique = |got: &[Delivery]| got.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have = unique(&got.lock().unwrap());
        if expected.is_subset(&have) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} webhooks arrived; missing e.g. {:?}",
            have.len(),
            expected.len(),
            expected.difference(&have).next()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let got = got.lock().unwrap().clone();
    assert_eq!(
        unique(&got),
        expected,
        "exactly the expected webhooks, nothing else"
    );
    for d in &got {
        assert!(d.signed, "a bad signature on {}", d.id);
        assert!(d.fresh, "a stale timestamp on {}", d.id);
        assert_eq!(d.body["id"], d.id.as_str());
        assert_eq!(d.body["type"], d.kind.as_str());
    }
    // The screen pop carries the caller and history; the end carries the record.
    let offered = got.iter().find(|d| d.kind == "call.offered").unwrap();
    assert_eq!(
        offered.body["data"]["caller"], "+15550100",
        "{:#}",
        offered.body
    );
    assert!(
        offered.body["data"]["history"]["contacts"]
            .as_i64()
            .is_some(),
        "{:#}",
        offered.body
    );
    let ended = got.iter().find(|d| d.kind == "call.ended").unwrap();
    assert_eq!(
        ended.body["data"]["record"]["queue"], "billing",
        "{:#}",
        ended.body
    );
    eprintln!(
        "{} deliveries for {} webhooks ({} repeated after the restart)",
        got.len(),
        expected.len(),
        got.len() - expected.len()
    );
}
