//! A real softphone as the agent: baresip registers as extension 2001 and
//! auto-answers, sending a 440 Hz tone (aufile) and recording what it hears
//! (sndfile). SIPp calls DID 2001 as a trunk and plays PCMA speech. The call
//! must be answered with RTP both ways through the server, and a loopback
//! capture must show that no RTP went directly between the phone and SIPp:
//! every media packet goes to or comes from the server's RTP ports.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// baresip with its own config directory, driven through stdin.
struct Phone {
    child: Option<Child>,
    dir: PathBuf,
    rtp_ports: (u16, u16),
}

impl Phone {
    fn start(server: &Server, dir: &Path, tone: &Path) -> Phone {
        let sip_port = alloc_ports(4); // baresip also binds sip_port+1 (TLS)
        let rtp_low = alloc_ports(20);
        let rtp_ports = (rtp_low, rtp_low + 19);
        let rec_dir = dir.join("recordings");
        std::fs::create_dir_all(&rec_dir).unwrap();
        let config = format!(
            "poll_method epoll\n\
             net_interface 127.0.0.1\n\
             sip_listen 127.0.0.1:{sip_port}\n\
             audio_player aubridge,nil\n\
             audio_source aufile,{tone}\n\
             audio_alert aubridge,nil\n\
             module_path /usr/lib/baresip/modules\n\
             module stdio.so\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             snd_path {rec}\n\
             rtp_ports {lo}-{hi}\n\
             audio_codecs PCMA/8000,PCMU/8000\n",
            tone = tone.display(),
            rec = rec_dir.display(),
            lo = rtp_ports.0,
            hi = rtp_ports.1,
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:2001@{}>;auth_pass={};answermode=auto;regint=60\n",
                server.addr(),
                server.config.password("2001")
            ),
        )
        .unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(dir.join("baresip.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("baresip.err")).unwrap())
            .spawn()
            .expect("start baresip");
        Phone {
            child: Some(child),
            dir: dir.to_path_buf(),
            rtp_ports,
        }
    }

    fn log(&self) -> String {
        let out = std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.join("baresip.err")).unwrap_or_default();
        format!("{out}{err}")
    }

    fn wait_for(&self, needles: &[&str], timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let log = self.log();
            if needles.iter().any(|n| log.contains(n)) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn recordings(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("recordings"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(suffix));
        v
    }

    fn quit(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(stdin) = child.stdin.as_mut() {
                let _ = stdin.write_all(b"/quit\n");
            }
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.quit();
    }
}

/// RMS amplitude (0..1) of a WAV file as measured by sox.
fn rms(wav: &Path) -> f64 {
    let out = Command::new("sox")
        .arg(wav)
        .args(["-n", "stat"])
        .output()
        .expect("run sox");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.starts_with("RMS     amplitude"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read RMS of {}: {text}", wav.display()))
}

/// Makes the phone's tone and starts baresip registered as 2001 (panics with
/// its log if it does not register).
fn start_registered_phone(server: &Server, work: &Path) -> Phone {
    let tone = work.join("tone440.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&tone)
        .args(["synth", "30", "sine", "440", "vol", "0.5"])
        .status()
        .expect("run sox");
    assert!(st.success(), "sox could not make the test tone");

    let phone_dir = work.join("phone");
    std::fs::create_dir_all(&phone_dir).unwrap();
    let phone = Phone::start(server, &phone_dir, &tone);
    if !phone.wait_for(
        &["registered successfully", "200 OK ("],
        Duration::from_secs(10),
    ) {
        let log = phone.log();
        let hint = if log.contains("Function not implemented") {
            "\n(baresip 1.0 / libre 1.1 fails with ENOSYS on a REGISTER challenge set \
             that contains any non-MD5 digest algorithm, whatever its position: it \
             cannot register while the server also offers algorithm=SHA-256)"
        } else {
            ""
        };
        panic!(
            "baresip did not register as 2001{hint}\nbaresip log:\n{log}\nswitchboard stderr:\n{}",
            server.stderr_tail(40)
        );
    }
    phone
}

/// The softphone Debian ships must be able to register against the default
/// configuration (no digest settings).
#[test]
fn baresip_registers_with_the_default_config() {
    require_tool("baresip", "baresip");
    require_tool("sox", "sox");
    let server = Server::start();
    let work = tempfile::Builder::new()
        .prefix("baresip-")
        .tempdir()
        .unwrap();
    let mut phone = start_registered_phone(&server, work.path());
    phone.quit();
}

#[test]
fn baresip_agent_answers_trunk_call_with_media_through_server() {
    require_tool("baresip", "baresip");
    require_tool("sox", "sox");
    require_tool("tshark", "tshark");
    require_pcap();

    // The shipped demo configuration, with only ports and data directory overridden.
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::Builder::new()
        .prefix("baresip-")
        .tempdir()
        .unwrap();
    let mut phone = start_registered_phone(&server, work.path());

    // capture every UDP packet of the phone's and the caller's media ports and
    // of the server's RTP range
    let sipp_media = alloc_ports(4);
    let (plo, phi) = phone.rtp_ports;
    let (slo, shi) = server.rtp_ports;
    let filter = format!(
        "udp and (portrange {plo}-{phi} or portrange {sipp_media}-{} or portrange {slo}-{shi})",
        sipp_media + 3
    );
    let capture = Capture::start(work.path(), &filter, 60);

    let started = now_ms();
    let caller = Sipp::new("uac_call.xml")
        .service("2001")
        .media_port(sipp_media)
        .duration_ms(3_000)
        .timeout_secs(30)
        .run(&server);
    let pairs = capture.finish();
    let rec_dec = phone.recordings("dec.wav");
    let phone_log = phone.log();
    phone.quit();

    caller.assert_ok(
        &server,
        &format!("trunk call answered by baresip\nbaresip log:\n{phone_log}"),
    );
    let rec = server.single_call();
    rec.assert_well_formed(started);
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.final_code, Some(200), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2001"), "{rec:#?}");
    rec.assert_media_both_ways(20);

    // media path on the wire
    let in_phone = |p: u16| (plo..=phi).contains(&p);
    let in_sipp = |p: u16| (sipp_media..sipp_media + 4).contains(&p);
    let in_server = |p: u16| (slo..=shi).contains(&p);
    let count = |f: &dyn Fn(u16, u16) -> bool| -> u32 {
        pairs
            .iter()
            .filter(|((s, d), _)| f(*s, *d))
            .map(|(_, n)| *n)
            .sum()
    };
    let direct = count(&|s, d| (in_phone(s) && in_sipp(d)) || (in_sipp(s) && in_phone(d)));
    let summary = format!(
        "packets by (src port, dst port): {pairs:?}\nphone RTP {plo}-{phi}, SIPp media \
         {sipp_media}-{}, server RTP {slo}-{shi}",
        sipp_media + 3
    );
    eprintln!("{summary}");
    assert_eq!(
        direct, 0,
        "RTP went directly between the phone and SIPp\n{summary}"
    );
    for (what, n) in [
        ("SIPp → server", count(&|s, d| in_sipp(s) && in_server(d))),
        ("server → SIPp", count(&|s, d| in_server(s) && in_sipp(d))),
        ("phone → server", count(&|s, d| in_phone(s) && in_server(d))),
        ("server → phone", count(&|s, d| in_server(s) && in_phone(d))),
    ] {
        assert!(n >= 20, "only {n} packets {what}\n{summary}");
    }

    // the phone heard something (the caller's speech), not silence
    assert!(
        !rec_dec.is_empty(),
        "baresip recorded nothing (no *-dec.wav)\nbaresip log:\n{phone_log}"
    );
    let heard = rms(&rec_dec[0]);
    eprintln!("phone recording {} RMS {heard}", rec_dec[0].display());
    assert!(
        heard > 0.005,
        "the phone's recording of the call is silent (RMS {heard}): {}",
        rec_dec[0].display()
    );
}
