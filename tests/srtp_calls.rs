//! SRTP (SDES keys, RFC 4568) on the legs that ask for it: baresip phones with their
//! srtp.so, registered over TLS, call a plain-RTP SIPp trunk and each other. The relay
//! decrypts one leg and encrypts the other with keys of its own: captured, no packet on
//! an encrypted leg carries a payload that travelled in the clear anywhere (the same
//! audio re-encrypted looks different on each leg), each is longer by its tag, and the
//! recording of the phone-to-phone call is the two phones' tones, one per channel.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::audio::{read_wav, tone_shares};
use common::phone::{tone_wav, Phone};
use common::*;

const CALLER_HZ: u32 = 440;
const CALLEE_HZ: u32 = 1000;

fn srtp_server(extra: ServerConfig) -> Server {
    Server::start_with(ServerConfig {
        tls: true,
        user_settings: vec![
            (
                "2001".into(),
                "media_encryption: require, dial_out: true".into(),
            ),
            ("2002".into(), "media_encryption: require".into()),
        ],
        extra_yaml: vec!["recording:\n  policy: always".into()],
        ..extra
    })
}

/// Dials `number` from a phone registered over TLS, over its TLS connection.
fn dial_over_tls(phone: &Phone, server: &Server, number: &str) {
    phone.dial(&format!(
        "sip:{number}@127.0.0.1:{};transport=tls",
        server.tls_port()
    ));
}

/// What follows the 12-octet header (these streams carry no CSRCs or extensions).
fn body(p: &CapturedPacket) -> &[u8] {
    &p.payload[12..]
}

/// The (RTP port) pairs a phone used with the server: its RTP port range's packets.
fn phone_legs<'a>(packets: &'a [CapturedPacket], phone: &Phone) -> Vec<&'a CapturedPacket> {
    let (lo, hi) = phone.rtp_ports();
    packets
        .iter()
        .filter(|p| {
            let port = |x: u16| (lo..=hi).contains(&x) && x.is_multiple_of(2);
            port(p.src_port) || port(p.dst_port)
        })
        .filter(|p| p.payload.len() > 12 && p.payload[0] >> 6 == 2)
        .filter(|p| !(200..=207).contains(&p.payload[1]))
        .collect()
}

/// RTP through this server's ports that is not on `leg`'s phone port: the other leg.
fn other_leg<'a>(
    packets: &'a [CapturedPacket],
    server: &Server,
    leg: &[&CapturedPacket],
) -> Vec<&'a CapturedPacket> {
    let (lo, hi) = server.rtp_ports;
    let ours = |x: u16| (lo..=hi).contains(&x);
    let taken: HashSet<u16> = leg
        .iter()
        .flat_map(|p| [p.src_port, p.dst_port])
        .filter(|x| !ours(*x))
        .collect();
    let other: Vec<&CapturedPacket> = packets
        .iter()
        .filter(|p| ours(p.src_port) != ours(p.dst_port))
        .filter(|p| !taken.contains(&p.src_port) && !taken.contains(&p.dst_port))
        .filter(|p| p.payload.len() > 12 && p.payload[0] >> 6 == 2)
        .filter(|p| !(200..=207).contains(&p.payload[1]))
        .collect();
    let mut far: Vec<u16> = other
        .iter()
        .map(|p| {
            if ours(p.src_port) {
                p.dst_port
            } else {
                p.src_port
            }
        })
        .collect();
    far.sort_unstable();
    far.dedup();
    assert!(
        far.len() <= 1,
        "more than one other leg: phone ports {far:?}"
    );
    other
}

/// The leg's packets are 20 ms G.711 frames (160 octets) plus an SRTP tag (baresip
/// starts with a frame or two of 22 ms, relayed as they are): none is plain RTP's size.
fn assert_encrypted(leg: &[&CapturedPacket], what: &str) {
    assert!(leg.len() >= 100, "{what}: only {} RTP packets", leg.len());
    let tagged = |p: &&&CapturedPacket| [4, 10, 16].contains(&(p.payload.len() as i64 - 172));
    for p in leg {
        assert!(
            p.payload.len() >= 172 + 4,
            "{what}: a {} octet packet ({} -> {}) has no room for an SRTP tag",
            p.payload.len(),
            p.src_port,
            p.dst_port,
        );
    }
    let framed = leg.iter().filter(tagged).count();
    assert!(
        framed * 10 >= leg.len() * 9,
        "{what}: only {framed} of {} packets are a 20 ms frame and a tag",
        leg.len()
    );
}

fn recording_of(server: &Server) -> PathBuf {
    let rows = server.wait_for_calls(1, Duration::from_secs(10));
    let name = rows[0]
        .recording
        .clone()
        .unwrap_or_else(|| panic!("the call was not recorded: {:#?}", rows[0]));
    server.data_dir().join(name)
}

#[test]
fn an_srtp_phone_calls_a_plain_trunk_through_the_relay() {
    let carrier_port = alloc_ports(1);
    let carrier_media = alloc_ports(4);
    let server = srtp_server(ServerConfig {
        trunk_outbound: Some(format!("127.0.0.1:{carrier_port}")),
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let tone = tone_wav(work.path(), CALLER_HZ, 8000);
    let phone = Phone::agent(&server, "2001")
        .tls()
        .srtp("srtp-mand")
        .source(&tone)
        .start(&server);
    let carrier = Sipp::new("uas_answer.xml")
        .local_port(carrier_port)
        .media_port(carrier_media)
        .args(&["-rtp_echo"])
        .no_remote()
        .spawn(&server);
    assert!(wait_udp_bound(carrier_port, Duration::from_secs(5)));
    let capture = Capture::start_payloads(work.path(), "udp", 40);

    dial_over_tls(&phone, &server, "5550123");
    phone.wait_established(Duration::from_secs(10));
    thread::sleep(Duration::from_secs(4));
    phone.hangup();
    phone.wait_closed(Duration::from_secs(10));
    let carrier_run = carrier.wait(Duration::from_secs(10));
    carrier_run.assert_ok(&server, "the carrier answers the phone's call");
    let packets = capture.finish_packets();

    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("5550123"), "{rec:#?}");
    rec.assert_media_both_ways(100);
    // The trunk leg is plain RTP: its payloads are the phone's audio as sent.
    let trunk: Vec<_> = packets
        .iter()
        .filter(|p| p.src_port == carrier_media || p.dst_port == carrier_media)
        .filter(|p| p.payload.len() == 172)
        .collect();
    assert!(
        trunk.len() >= 100,
        "{} plain packets on the trunk leg",
        trunk.len()
    );
    let plain: HashSet<&[u8]> = trunk.iter().map(|p| body(p)).collect();
    let phone_leg = phone_legs(&packets, &phone);
    assert_encrypted(&phone_leg, "the phone's leg");
    let leaked = phone_leg.iter().filter(|p| plain.contains(body(p))).count();
    assert_eq!(
        leaked, 0,
        "payloads of the trunk's plain RTP seen on the encrypted leg"
    );

    // The carrier echoed the phone's tone: the phone heard it, decrypted right.
    let heard = read_wav(&phone.heard());
    let tones = tone_shares(&heard.channels[0], heard.rate, &[CALLER_HZ as f64]);
    assert!(
        tones.share(CALLER_HZ as f64) > 0.5,
        "the phone should hear its tone echoed by the trunk: {tones:?}"
    );
}

#[test]
fn two_srtp_phones_talk_through_the_relay_and_the_recording_is_their_stereo() {
    let server = srtp_server(ServerConfig::default());
    let work = tempfile::tempdir().unwrap();
    let callee = Phone::agent(&server, "2002")
        .tls()
        .srtp("srtp-mand")
        .auto_answer()
        .source(&tone_wav(work.path(), CALLEE_HZ, 8000))
        .start(&server);
    let caller = Phone::agent(&server, "2001")
        .tls()
        .srtp("srtp-mand")
        .source(&tone_wav(work.path(), CALLER_HZ, 8000))
        .start(&server);
    let capture = Capture::start_payloads(work.path(), "udp", 40);

    dial_over_tls(&caller, &server, "2002");
    caller.wait_established(Duration::from_secs(10));
    thread::sleep(Duration::from_secs(5));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    callee.wait_closed(Duration::from_secs(10));
    let packets = capture.finish_packets();

    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    rec.assert_media_both_ways(100);
    let a = phone_legs(&packets, &caller);
    // The callee's leg: the server's other stream (told by the server's ports, not the
    // phone's own range, so a phone that picked a port elsewhere is still seen).
    let b = other_leg(&packets, &server, &a);
    assert_encrypted(&a, "the caller's leg");
    assert_encrypted(&b, "the callee's leg");
    // Same audio, same codec, relayed: in the clear the two legs' payloads would be
    // equal. Each leg has its own keys, so none is.
    let a_bodies: HashSet<&[u8]> = a.iter().map(|p| body(p)).collect();
    let shared = b.iter().filter(|p| a_bodies.contains(body(p))).count();
    assert_eq!(
        shared, 0,
        "payloads seen unchanged on both legs: a key crossed legs"
    );

    // Each phone heard the other one.
    for (phone, hz, not) in [
        (&caller, CALLEE_HZ, CALLER_HZ),
        (&callee, CALLER_HZ, CALLEE_HZ),
    ] {
        let heard = read_wav(&phone.heard());
        let t = tone_shares(&heard.channels[0], heard.rate, &[hz as f64, not as f64]);
        assert!(
            t.share(hz as f64) > 0.5,
            "{} should hear {hz} Hz: {t:?}",
            phone.name()
        );
    }
    // The recording: caller left, callee right, decrypted.
    let wav = read_wav(&recording_of(&server));
    assert_eq!(wav.channels.len(), 2, "stereo");
    let (c, r) = (CALLER_HZ as f64, CALLEE_HZ as f64);
    let len = wav.channels[0].len();
    let middle = |ch: usize| &wav.channels[ch][len / 5..len * 4 / 5];
    tone_shares(middle(0), wav.rate, &[c, r]).assert_hears(&[c], &[r]);
    tone_shares(middle(1), wav.rate, &[c, r]).assert_hears(&[r], &[c]);
}
