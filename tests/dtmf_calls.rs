//! DTMF on IVR calls, end to end: a SIPp caller presses all sixteen keys
//! (`0`-`9`, `*`, `#`, `A`-`D`) into a flow that collects them, in each way a phone or
//! trunk may send them: RFC 4733 telephone-events (a capture generated here and
//! replayed by SIPp), SIP INFO (`application/dtmf-relay` and `application/dtmf`
//! bodies), and tones in the audio of a caller whose SDP offers no telephone-event
//! (a µ-law stream generated here and played by SIPp's `rtp_stream`). Each way, the
//! call record must show the collected variable holding exactly the sixteen keys.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::rtp::{write_udp_pcap, Rtp};
use common::*;
use switchboard::media::codec::ulaw_encode;

const ALL_KEYS: &str = "0123456789*#ABCD";

/// Collects sixteen keys (no terminator, so `#` is a key like the others), then hangs up.
const KEYS_FLOW: &str = r#"
name: keys
entry: ask
prompts: en
nodes:
  ask:
    collect:
      prompts: [enter_account]
      variable: keys
      max_digits: 16
      terminator: null
      first_digit_timeout_secs: 20
      inter_digit_timeout_secs: 5
      retries: 0
      next: bye
      on_fail: bye
  bye:
    hangup: {}
"#;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A server whose DID 100 is answered by [`KEYS_FLOW`]; the flow directory lives as
/// long as the server.
fn keys_server() -> (Server, tempfile::TempDir) {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("keys.yaml"), KEYS_FLOW).unwrap();
    let server = Server::start_with(ServerConfig {
        dids: Vec::new(),
        flow_dids: vec![("100".into(), "keys".into())],
        ivr: Some((flows.path().to_path_buf(), repo("prompts"))),
        ..ServerConfig::default()
    });
    (server, flows)
}

/// SDP media lines of a phone with telephone-event (payload type 101).
const SDP_WITH_EVENTS: &str = "m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv";

/// SDP media lines of a trunk with PCMU alone: keys can only be tones in the audio.
/// The port is the one SIPp's `rtp_stream` sends from.
const SDP_PCMU_ONLY: &str = "m=audio [rtpstream_audio_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv";

/// A caller that dials [service], is answered, does `after_ack` (the key presses), and
/// waits for the IVR to hang up (the flow does once it has all the keys).
fn caller_scenario(dir: &Path, name: &str, sdp_media: &str, after_ack: &str) -> PathBuf {
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Trunk Caller" <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]Uac[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+15550100@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 1 IN IP[media_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      {sdp_media}

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Trunk Caller" <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]Uac[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:+15550100@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="500"/>
{after_ack}
  <recv request="BYE" timeout="30000"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:+15550100@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    );
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, xml).unwrap();
    path
}

/// Runs `scenario` against DID 100 and returns what the flow collected, from the call
/// record's IVR trace (the line `keys = "…"`).
fn collected_keys(server: &Server, scenario: &Path, what: &str) -> String {
    let caller = Sipp::from_file(scenario)
        .service("100")
        .timeout_secs(40)
        .run(server);
    caller.assert_ok(server, what);
    let rec = server.single_call();
    assert_eq!(rec.flow.as_deref(), Some("keys"), "{rec:#?}");
    assert_eq!(
        rec.hangup_by.as_deref(),
        Some("switchboard"),
        "the flow hung up once it had its keys: {rec:#?}"
    );
    let trace = rec.ivr_trace.clone().unwrap_or_default();
    let value = trace
        .lines()
        .find_map(|l| l.strip_prefix("keys = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{what}: the flow set no `keys` variable; trace:\n{trace}"));
    value.to_string()
}

/// The RFC 4733 event code of a key (§3.2).
fn event_code(key: char) -> u8 {
    match key {
        '0'..='9' => key as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => 12 + (key as u8 - b'A'),
        _ => panic!("{key:?} is not a DTMF key"),
    }
}

/// The telephone-event packets (payload type `pt`) of `keys` pressed 100 ms each,
/// 300 ms apart, as phones send them: a start packet (marker bit) 20 ms into the
/// press, an update at 50 ms, and the end three times, 20 ms apart; every packet of a
/// press carries the press's start as its timestamp.
fn telephone_events(keys: &str, pt: u8) -> Vec<(Duration, Vec<u8>)> {
    let mut packets = Vec::new();
    let mut seq: u16 = 4711;
    for (i, key) in keys.chars().enumerate() {
        let start = Duration::from_millis(300 * i as u64);
        let timestamp = 16_000 + 2_400 * i as u32;
        // (sent at ms into the press, end bit, duration in 8 kHz ticks)
        let train = [
            (20, false, 160),
            (50, false, 400),
            (100, true, 800),
            (120, true, 800),
            (140, true, 800),
        ];
        for (n, (at, end, duration)) in train.into_iter().enumerate() {
            let volume = 10u8;
            let mut payload = vec![event_code(key), volume | if end { 0x80 } else { 0 }];
            payload.extend_from_slice(&u16::to_be_bytes(duration));
            let rtp = Rtp {
                payload_type: pt,
                marker: n == 0,
                seq,
                timestamp,
                ssrc: 0x5eed_0001,
                payload,
            };
            seq = seq.wrapping_add(1);
            packets.push((start + Duration::from_millis(at), rtp.to_bytes()));
        }
    }
    packets
}

#[test]
fn all_sixteen_keys_as_rfc_4733_telephone_events() {
    require_pcap();
    let (server, _flows) = keys_server();
    let work = tempfile::tempdir().unwrap();
    let pcap = work.path().join("keys-rfc4733.pcap");
    write_udp_pcap(&pcap, 6000, 6002, &telephone_events(ALL_KEYS, 101));
    let play = format!(
        "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>",
        pcap.display()
    );
    let scenario = caller_scenario(work.path(), "uac_keys_rfc4733", SDP_WITH_EVENTS, &play);
    assert_eq!(
        collected_keys(&server, &scenario, "16 keys as telephone-events"),
        ALL_KEYS
    );
}

/// Sixteen INFO requests in the caller's dialog, one key each, `body(key)` with
/// `content_type`, each answered 200 before the next goes 100 ms later.
fn info_presses(content_type: &str, body: impl Fn(char) -> String) -> String {
    let mut xml = String::new();
    for (i, key) in ALL_KEYS.chars().enumerate() {
        let body = body(key).replace('\n', "\n      ");
        // A pause between presses, none after the last: the IVR hangs up at once then.
        if i > 0 {
            xml.push_str("  <pause milliseconds=\"100\"/>\n");
        }
        write!(
            xml,
            r#"  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Trunk Caller" <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]Uac[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:+15550100@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: {content_type}
      Content-Length: [len]

      {body}
    ]]>
  </send>
  <recv response="200"/>
"#,
            cseq = i + 2,
        )
        .unwrap();
    }
    xml
}

#[test]
fn all_sixteen_keys_as_sip_info_dtmf_relay() {
    require_pcap();
    let (server, _flows) = keys_server();
    let work = tempfile::tempdir().unwrap();
    let presses = info_presses("application/dtmf-relay", |key| {
        format!("Signal={key}\nDuration=160")
    });
    let scenario = caller_scenario(
        work.path(),
        "uac_keys_info_relay",
        SDP_WITH_EVENTS,
        &presses,
    );
    assert_eq!(
        collected_keys(&server, &scenario, "16 keys as INFO application/dtmf-relay"),
        ALL_KEYS
    );
}

#[test]
fn all_sixteen_keys_as_sip_info_dtmf() {
    require_pcap();
    let (server, _flows) = keys_server();
    let work = tempfile::tempdir().unwrap();
    let presses = info_presses("application/dtmf", |key| key.to_string());
    let scenario = caller_scenario(work.path(), "uac_keys_info_dtmf", SDP_WITH_EVENTS, &presses);
    assert_eq!(
        collected_keys(&server, &scenario, "16 keys as INFO application/dtmf"),
        ALL_KEYS
    );
}

/// The (row, column) frequencies of a key (ITU-T Q.23).
fn key_tones(key: char) -> (f64, f64) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    let (row, col) = PAD
        .iter()
        .enumerate()
        .find_map(|(r, keys)| keys.find(key).map(|c| (r, c)))
        .unwrap_or_else(|| panic!("{key:?} is not a DTMF key"));
    (ROWS[row], COLS[col])
}

/// µ-law audio (8 kHz, no header: SIPp's `rtp_stream` sends a file's bytes as they
/// are) of `keys` as dual tones, 100 ms each with 100 ms of silence after, each tone
/// about -10 dBm0, after 300 ms of silence and with 500 ms more at the end.
fn keypad_ulaw(keys: &str) -> Vec<u8> {
    const RATE: f64 = 8000.0;
    // 0 dBm0 is a sine of peak 22,700 in 16-bit G.711 terms; -10 dB of that.
    let amplitude = 22_700.0 * 10f64.powf(-10.0 / 20.0);
    let silence = |ms: usize| std::iter::repeat_n(0i16, ms * 8);
    let mut pcm: Vec<i16> = silence(300).collect();
    for key in keys.chars() {
        let (low, high) = key_tones(key);
        pcm.extend((0..800).map(|n| {
            let t = f64::from(n) / RATE;
            let v =
                (std::f64::consts::TAU * low * t).sin() + (std::f64::consts::TAU * high * t).sin();
            (amplitude * v).round() as i16
        }));
        pcm.extend(silence(100));
    }
    pcm.extend(silence(500));
    pcm.into_iter().map(ulaw_encode).collect()
}

#[test]
fn all_sixteen_keys_as_tones_when_the_caller_offers_no_telephone_event() {
    require_pcap();
    let (server, _flows) = keys_server();
    let work = tempfile::tempdir().unwrap();
    let audio = work.path().join("keys.ulaw");
    std::fs::write(&audio, keypad_ulaw(ALL_KEYS)).unwrap();
    let play = format!(
        "  <nop><action><exec rtp_stream=\"{},1,0\"/></action></nop>",
        audio.display()
    );
    let scenario = caller_scenario(work.path(), "uac_keys_inband", SDP_PCMU_ONLY, &play);
    assert_eq!(
        collected_keys(&server, &scenario, "16 keys as in-band tones over PCMU"),
        ALL_KEYS
    );
}

#[test]
fn an_info_the_ivr_cannot_read_gets_415_and_keys_still_count() {
    require_pcap();
    let (server, _flows) = keys_server();
    let work = tempfile::tempdir().unwrap();
    // A text/plain INFO first (answered 415 with Accept), then the sixteen keys.
    let unreadable = r#"  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Trunk Caller" <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]Uac[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 100 INFO
      Max-Forwards: 70
      Content-Type: text/plain
      Content-Length: [len]

      hello
    ]]>
  </send>
  <recv response="415">
    <action>
      <ereg regexp="application/dtmf-relay" search_in="hdr" header="Accept:" check_it="true" assign_to="accept"/>
    </action>
  </recv>
  <Reference variables="accept"/>
  <pause milliseconds="100"/>
"#;
    let presses = info_presses("application/dtmf-relay", |key| {
        format!("Signal={key}\nDuration=160")
    })
    .replace("CSeq: 2 INFO", "CSeq: 101 INFO");
    let presses = (3..18).fold(presses, |xml, n| {
        xml.replace(
            &format!("CSeq: {n} INFO"),
            &format!("CSeq: {} INFO", n + 99),
        )
    });
    let scenario = caller_scenario(
        work.path(),
        "uac_keys_after_415",
        SDP_WITH_EVENTS,
        &format!("{unreadable}{presses}"),
    );
    assert_eq!(
        collected_keys(&server, &scenario, "a 415 for text/plain, then 16 keys"),
        ALL_KEYS
    );
}
