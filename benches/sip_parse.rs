//! SIP message cost: parsing (normalisation + rsip) and parse + transaction routing.
//! Run: cargo bench --bench sip_parse

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switchboard::config::Transport;
use switchboard::sip::message;
use switchboard::sip::transaction::{LocalAddr, Output, Peer, Timers, TransactionLayer, TxEvent};

const INVITE: &[u8] = b"INVITE sip:2001@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bench-1;rport\r\n\
From: \"Trunk Caller\" <sip:+15550100@127.0.0.1:5070>;tag=abc123\r\n\
To: <sip:2001@127.0.0.1:5060>\r\n\
Call-ID: bench-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+15550100@127.0.0.1:5070>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\r\n\
v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";

const OPTIONS: &[u8] = b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bench-1;rport\r\n\
From: <sip:monitor@127.0.0.1:5070>;tag=abc123\r\n\
To: <sip:127.0.0.1:5060>\r\n\
Call-ID: bench-1@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_invite", |b| {
        b.iter(|| message::parse(black_box(INVITE)).unwrap())
    });
    // Parse an OPTIONS, let the transaction layer route it (new server transaction, event
    // for the TU), answer 200 and serialise it. Each iteration uses a fresh branch; expired
    // transactions are swept every 1024 messages so the table stays at a realistic size.
    let mut layer = TransactionLayer::new(
        Timers::default(),
        vec![LocalAddr {
            transport: Transport::Udp,
            advertise: "127.0.0.1:5060".parse().unwrap(),
        }],
    );
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
    let mut n = 0u64;
    g.bench_function("parse_route_respond_options", |b| {
        b.iter(|| {
            n += 1;
            let raw = text.replace("bench-1", &format!("b{n}"));
            let now = Instant::now();
            let msg = message::parse(raw.as_bytes()).unwrap();
            layer.handle_message(msg, peer(), now);
            while let Some(o) = layer.poll() {
                match o {
                    Output::Event(TxEvent::Request { tx, req, .. }) => {
                        layer.respond(tx, message::response_to(&req, 200, Some("t")), now)
                    }
                    other => {
                        black_box(other);
                    }
                }
            }
            if n.is_multiple_of(1024) {
                layer.handle_timeout(now + Duration::from_secs(40));
                while layer.poll().is_some() {}
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
