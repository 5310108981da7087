//! A real softphone for audio tests: baresip with its own configuration
//! directory, driven through its standard input, playing a WAV file as its
//! microphone (aufile) and recording what it hears (sndfile).
//!
//! ```ignore
//! let agent = Phone::agent(&server, "2001")
//!     .auto_answer()
//!     .source(&tone_wav(work, 700, 8000))
//!     .start(&server);
//! let caller = Phone::dialler("caller").source(&tone_wav(work, 440, 8000)).start(&server);
//! caller.call(&server, "2001");
//! caller.wait_established(Duration::from_secs(10));
//! ```
//!
//! Things baresip 1.0 (Debian) insists on, which this module takes care of:
//! * aufile only plays a WAV whose sample rate is the codec's (8 kHz for G.711,
//!   16 kHz for G.722); otherwise the call has no audio source at all.
//! * The codec list goes into the account line (`audio_codecs=G722/16000/1`).
//! * Recordings are named after the second the call was answered, so two calls of
//!   one phone must start in different seconds to keep both recordings.
//! * A DTMF key is a single byte on stdin, without a newline (a newline is itself a
//!   menu key).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::{alloc_ports, require_tool, wait_udp_bound, Server, LOCALHOST};

const BARESIP_MODULES: &str = "/usr/lib/baresip/modules";
/// How long a registering phone may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a recording may take to be closed (its WAV header written) after the call.
const RECORDING_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Log lines (substrings) by which baresip 1.0 reports call events.
const ESTABLISHED: &str = "Call established:";
const INCOMING: &str = "Incoming call from:";
const REGISTERED: &str = "registered successfully";
/// A call that fails or is ended by the peer: `session closed: 486 BusyHere`,
/// `session closed: Connection reset by peer`.
const SESSION_CLOSED: &str = "session closed:";
/// Any established call that ends: `Call with sip:… terminated (duration: 7 secs)`,
/// right after `session closed` when the peer ended it.
const TERMINATED: &str = " terminated (duration:";
/// This phone rejected a ringing call (`/hangup` before answering).
const REJECTED: &str = "rejecting incoming call";

/// An audio codec the phone offers or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// G.722 (baresip's g722.so), 16 kHz audio.
    G722,
}

impl Codec {
    /// The audio sample rate the phone works at with this codec (the source WAV's
    /// rate and the recordings' rate).
    pub fn rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16000,
        }
    }

    fn baresip_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000/1",
            Codec::Pcma => "PCMA/8000/1",
            Codec::G722 => "G722/16000/1",
        }
    }
}

#[derive(Debug, Clone)]
enum Account {
    /// Registers with the server and can be called.
    Registered { extension: String, password: String },
    /// Does not register; calls from 127.0.0.1 with this user, i.e. as a trunk.
    Dialler { user: String },
}

/// A phone being configured; [`PhoneBuilder::start`] starts it.
#[derive(Debug, Clone)]
pub struct PhoneBuilder {
    account: Account,
    auto_answer: bool,
    codecs: Vec<Codec>,
    source: Option<PathBuf>,
    /// Runs in the phone namespace of this NAT (its private address, the server at the
    /// NAT's server address).
    nat: Option<String>,
    /// Register and call over TLS, trusting the server's self-signed certificate.
    tls: bool,
    /// baresip's `mediaenc` (its srtp.so): `srtp-mand` (RTP/SAVP only) or `srtp`
    /// (best effort: RTP/AVP with keys).
    mediaenc: Option<&'static str>,
}

impl PhoneBuilder {
    /// SIP over TLS to the server's TLS port (`ServerConfig::tls`).
    pub fn tls(mut self) -> PhoneBuilder {
        self.tls = true;
        self
    }

    /// SRTP with SDES keys: `srtp-mand` offers and accepts RTP/SAVP only, `srtp` is
    /// best effort.
    pub fn srtp(mut self, mediaenc: &'static str) -> PhoneBuilder {
        self.mediaenc = Some(mediaenc);
        self
    }

    /// Put the phone on the private side of `nat`.
    pub fn behind(mut self, nat: &super::nat::Nat) -> PhoneBuilder {
        self.nat = Some(nat.phone_ns.clone());
        self
    }

    /// Answer incoming calls at once (`answermode=auto`); otherwise they ring until
    /// [`Phone::answer`] or [`Phone::hangup`].
    pub fn auto_answer(mut self) -> PhoneBuilder {
        self.auto_answer = true;
        self
    }

    /// The codecs offered and accepted, most preferred first (default PCMU, PCMA).
    pub fn codecs(mut self, codecs: &[Codec]) -> PhoneBuilder {
        assert!(!codecs.is_empty(), "a phone needs at least one codec");
        self.codecs = codecs.to_vec();
        self
    }

    /// What the phone says: a mono WAV at the codec's rate (see [`tone_wav`]).
    /// Without one it sends silence.
    pub fn source(mut self, wav: &Path) -> PhoneBuilder {
        self.source = Some(wav.to_path_buf());
        self
    }

    /// Starts baresip. A registering phone is waited for until it has registered
    /// (panics with its log and the server's if it does not); a dialler until it is
    /// ready to dial.
    pub fn start(self, server: &Server) -> Phone {
        require_tool("baresip", "baresip");
        let dir = tempfile::Builder::new()
            .prefix("baresip-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let source = match &self.source {
            Some(wav) => {
                let spec = hound::WavReader::open(wav)
                    .unwrap_or_else(|e| panic!("phone source {}: {e}", wav.display()))
                    .spec();
                assert!(
                    self.codecs.iter().any(|c| c.rate() == spec.sample_rate),
                    "phone source {} is {} Hz, but baresip's aufile plays only WAVs at the \
                     codec's rate and the codecs {:?} run at {:?} Hz",
                    wav.display(),
                    spec.sample_rate,
                    self.codecs,
                    self.codecs.iter().map(|c| c.rate()).collect::<Vec<_>>()
                );
                wav.clone()
            }
            None => {
                let silence = d.join("silence.wav");
                super::audio::write_tones_wav(&silence, self.codecs[0].rate(), 60.0, &[&[]]);
                silence
            }
        };

        let sip_port = alloc_ports(4); // baresip also binds sip_port + 1 (TLS)
        let rtp_low = alloc_ports(20);
        let rtp_ports = (rtp_low, rtp_low + 19);
        let rec_dir = d.join("recordings");
        std::fs::create_dir_all(&rec_dir).unwrap();
        let (local_ip, registrar) = match &self.nat {
            Some(_) => (
                super::nat::PHONE_IP,
                format!("{}:{}", super::nat::SERVER_IP, server.socket_addr().port()),
            ),
            None if self.tls => (LOCALHOST, format!("{LOCALHOST}:{}", server.tls_port())),
            None => (LOCALHOST, server.addr()),
        };
        let (transport, cafile) = if self.tls {
            let cert = server.data_dir().join("tls/self-signed-cert.pem");
            (";transport=tls", format!("sip_cafile {}\n", cert.display()))
        } else {
            ("", String::new())
        };
        let config = format!(
            "poll_method epoll\n\
             net_interface {local_ip}\n\
             sip_listen {local_ip}:{sip_port}\n\
             audio_player aubridge,nil\n\
             audio_source aufile,{source}\n\
             audio_alert aubridge,nil\n\
             module_path {BARESIP_MODULES}\n\
             module stdio.so\n\
             module g711.so\n\
             module g722.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             {srtp_module}\
             module_app account.so\n\
             module_app menu.so\n\
             snd_path {rec}\n\
             rtp_ports {lo}-{hi}\n\
             {cafile}",
            source = source.display(),
            srtp_module = if self.mediaenc.is_some() {
                "module srtp.so\n"
            } else {
                ""
            },
            rec = rec_dir.display(),
            lo = rtp_ports.0,
            hi = rtp_ports.1,
        );
        std::fs::write(d.join("config"), config).unwrap();
        let codecs: Vec<&str> = self.codecs.iter().map(|c| c.baresip_name()).collect();
        let answer = if self.auto_answer { "auto" } else { "manual" };
        let account = match &self.account {
            Account::Registered {
                extension,
                password,
            } => format!("<sip:{extension}@{registrar}{transport}>;auth_pass={password};regint=60"),
            Account::Dialler { user } => format!("<sip:{user}@{LOCALHOST}:{sip_port}>;regint=0"),
        };
        std::fs::write(
            d.join("accounts"),
            format!(
                "{account};answermode={answer};audio_codecs={}{}\n",
                codecs.join(","),
                self.mediaenc
                    .map(|m| format!(";mediaenc={m}"))
                    .unwrap_or_default()
            ),
        )
        .unwrap();

        let mut command = match &self.nat {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "baresip"]);
                c
            }
            None => Command::new("baresip"),
        };
        let child = command
            .arg("-f")
            .arg(d)
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(d.join("baresip.log")).unwrap())
            .stderr(std::fs::File::create(d.join("baresip.err")).unwrap())
            .spawn()
            .expect("start baresip");
        let mut phone = Phone {
            stdin: Mutex::new(None),
            child: Some(child),
            dir: Some(dir),
            name: match &self.account {
                Account::Registered { extension, .. } => extension.clone(),
                Account::Dialler { user } => user.clone(),
            },
            sip_port,
            rtp_ports,
            seen_established: AtomicUsize::new(0),
            seen_closed: AtomicUsize::new(0),
            seen_incoming: AtomicUsize::new(0),
        };
        *phone.stdin.get_mut().unwrap() = phone.child.as_mut().unwrap().stdin.take();

        match &self.account {
            Account::Registered { extension, .. } => {
                if !phone.wait_for_log(REGISTERED, REGISTER_TIMEOUT) {
                    let log = phone.log();
                    let hint = if log.contains("Function not implemented") {
                        "\n(baresip 1.0 / libre 1.1 fails with ENOSYS on a REGISTER challenge \
                         set that contains any non-MD5 digest algorithm, whatever its \
                         position: it cannot register while the server also offers \
                         algorithm=SHA-256)"
                    } else {
                        ""
                    };
                    panic!(
                        "baresip did not register as {extension} within {REGISTER_TIMEOUT:?}\
                         {hint}\nbaresip log:\n{log}\nswitchboard stderr:\n{}",
                        server.stderr_tail(40)
                    );
                }
            }
            Account::Dialler { user } => {
                let ready = phone.wait_for_log("baresip is ready.", REGISTER_TIMEOUT)
                    && wait_udp_bound(sip_port, REGISTER_TIMEOUT);
                assert!(
                    ready,
                    "baresip ({user}) did not start\nbaresip log:\n{}",
                    phone.log()
                );
            }
        }
        phone
    }
}

/// A running baresip. Dropping it quits baresip (killing it if it does not exit),
/// then removes its directory unless `SWITCHBOARD_TEST_KEEP` is set.
pub struct Phone {
    stdin: Mutex<Option<ChildStdin>>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    name: String,
    sip_port: u16,
    rtp_ports: (u16, u16),
    seen_established: AtomicUsize,
    seen_closed: AtomicUsize,
    seen_incoming: AtomicUsize,
}

impl Phone {
    /// A phone that registers as `extension` with `password`.
    pub fn registered(extension: &str, password: &str) -> PhoneBuilder {
        PhoneBuilder {
            account: Account::Registered {
                extension: extension.into(),
                password: password.into(),
            },
            auto_answer: false,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            source: None,
            nat: None,
            tls: false,
            mediaenc: None,
        }
    }

    /// A phone that registers as `extension` with its password in the server's
    /// configuration.
    pub fn agent(server: &Server, extension: &str) -> PhoneBuilder {
        Phone::registered(extension, &server.config.password(extension))
    }

    /// A phone that never registers and calls as `user@127.0.0.1`: a trunk caller to
    /// a server that treats loopback as a trunk.
    pub fn dialler(user: &str) -> PhoneBuilder {
        PhoneBuilder {
            account: Account::Dialler { user: user.into() },
            auto_answer: false,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            source: None,
            nat: None,
            tls: false,
            mediaenc: None,
        }
    }

    /// The extension or user it was built with.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// The RTP port range baresip uses (inclusive).
    pub fn rtp_ports(&self) -> (u16, u16) {
        self.rtp_ports
    }

    /// The configuration directory (logs in `baresip.log`/`baresip.err`, recordings
    /// in `recordings/`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Writes `text` to baresip's standard input as it is.
    pub fn send(&self, text: &str) {
        let mut stdin = self.stdin.lock().unwrap();
        let pipe = stdin
            .as_mut()
            .unwrap_or_else(|| panic!("baresip ({}) has quit", self.name));
        pipe.write_all(text.as_bytes())
            .and_then(|()| pipe.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot write to baresip ({}): {e}\nbaresip log:\n{}",
                    self.name,
                    self.log_tail(40)
                )
            });
    }

    /// Runs a menu command, e.g. `/dial sip:2001@127.0.0.1:5060`.
    pub fn command(&self, line: &str) {
        self.send(&format!("{line}\n"));
    }

    /// Dials a SIP URI.
    pub fn dial(&self, uri: &str) {
        self.command(&format!("/dial {uri}"));
    }

    /// Dials `number` at the server (a DID for a dialler, an extension or feature
    /// code for a registered phone).
    pub fn call(&self, server: &Server, number: &str) {
        self.dial(&format!("sip:{number}@{}", server.addr()));
    }

    /// Answers the ringing call.
    pub fn answer(&self) {
        self.command("/accept");
    }

    /// Sends one DTMF key (0-9, *, #, A-D) during the call, as RFC 4733 events. Leave
    /// at least 100 ms between keys.
    pub fn send_dtmf(&self, key: char) {
        assert!(
            key.is_ascii_digit() || "*#ABCD".contains(key),
            "{key:?} is not a DTMF key"
        );
        self.send(&key.to_string());
    }

    /// Hangs up the current call, or rejects a ringing one (486).
    pub fn hangup(&self) {
        self.command("/hangup");
    }

    /// Everything baresip printed so far, without its once-a-frame status lines.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir().join(f)).unwrap_or_default();
        let raw = format!("{}{}", read("baresip.log"), read("baresip.err"));
        clean_log(&raw)
    }

    /// The last `n` lines of [`log`](Self::log).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |log| log.contains(needle))
    }

    /// How many lines of the log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// How many calls have been established so far (answered, either way).
    pub fn calls_established(&self) -> usize {
        self.log_count(ESTABLISHED)
    }

    /// How many calls have ended so far, established or not (failed, rejected,
    /// cancelled, hung up by either side).
    pub fn calls_closed(&self) -> usize {
        calls_closed(&self.log())
    }

    /// How many incoming calls have rung so far.
    pub fn calls_incoming(&self) -> usize {
        self.log_count(INCOMING)
    }

    /// Waits for the next call to be established: each call waits for one more than
    /// the previous call saw. Panics with the log on timeout.
    pub fn wait_established(&self, timeout: Duration) {
        self.wait_next(
            "a call to be established",
            &self.seen_established,
            timeout,
            |p| p.calls_established(),
        );
    }

    /// Waits for the next call to end (see [`calls_closed`](Self::calls_closed)).
    pub fn wait_closed(&self, timeout: Duration) {
        self.wait_next("a call to end", &self.seen_closed, timeout, |p| {
            p.calls_closed()
        });
    }

    /// Waits for the next incoming call to ring.
    pub fn wait_incoming(&self, timeout: Duration) {
        self.wait_next("an incoming call", &self.seen_incoming, timeout, |p| {
            p.calls_incoming()
        });
    }

    fn wait_next(
        &self,
        what: &str,
        seen: &AtomicUsize,
        timeout: Duration,
        count: impl Fn(&Phone) -> usize,
    ) {
        let want = seen.load(Ordering::SeqCst) + 1;
        let end = Instant::now() + timeout;
        loop {
            let n = count(self);
            if n >= want {
                seen.store(want, Ordering::SeqCst);
                return;
            }
            if Instant::now() > end {
                panic!(
                    "baresip ({}) waited {timeout:?} for {what} (number {want}; seen {n})\n\
                     baresip log (tail):\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if ok(&self.log()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every recording whose name ends with `suffix` (`-dec.wav`: what the phone
    /// heard; `-enc.wav`: what it sent), oldest first.
    pub fn recordings(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir().join("recordings"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(suffix));
        // named dump-YYYY-MM-DD-hh-mm-ss-…, so the name order is the time order
        v.sort();
        v
    }

    /// What the phone heard in its latest call: the `-dec.wav` recording, once its
    /// WAV header is complete (i.e. the call has ended). Panics if there is none.
    pub fn heard(&self) -> PathBuf {
        self.latest_recording("-dec.wav")
    }

    /// What the phone sent in its latest call (`-enc.wav`), once complete.
    pub fn sent(&self) -> PathBuf {
        self.latest_recording("-enc.wav")
    }

    fn latest_recording(&self, suffix: &str) -> PathBuf {
        let end = Instant::now() + RECORDING_CLOSE_TIMEOUT;
        loop {
            let latest = self.recordings(suffix).pop();
            if let Some(path) = latest.as_ref().filter(|p| wav_complete(p)) {
                return path.clone();
            }
            if Instant::now() > end {
                panic!(
                    "baresip ({}) has {} *{suffix} recording within {RECORDING_CLOSE_TIMEOUT:?} \
                     (recordings start when a call is answered and are complete when it \
                     ends)\nbaresip log (tail):\n{}",
                    self.name,
                    match latest {
                        Some(p) => format!("only an unfinished {}, no complete", p.display()),
                        None => "no".into(),
                    },
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Quits baresip (`/quit`), killing it if it has not exited within 3 s.
    /// Recordings and logs stay until the phone is dropped.
    pub fn quit(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(mut stdin) = self.stdin.lock().unwrap().take() {
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

impl Drop for Phone {
    fn drop(&mut self) {
        self.quit();
        if std::env::var_os("SWITCHBOARD_TEST_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "keeping baresip ({}) dir {}",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}

/// Makes (once per directory) a 60 s mono 16-bit sine of `hz` at `rate` Hz with sox,
/// at half of full scale: `DIR/tone{hz}-{rate}.wav`.
pub fn tone_wav(dir: &Path, hz: u32, rate: u32) -> PathBuf {
    require_tool("sox", "sox");
    let path = dir.join(format!("tone{hz}-{rate}.wav"));
    if !path.is_file() {
        let out = Command::new("sox")
            .args(["-n", "-r", &rate.to_string(), "-c", "1", "-b", "16"])
            .arg(&path)
            .args(["synth", "60", "sine", &hz.to_string(), "vol", "0.5"])
            .output()
            .expect("run sox");
        assert!(
            out.status.success(),
            "sox could not make {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

/// baresip's output as lines: without the status line and without the echo of a
/// command being typed (`/d`, `/di`, … before `/dial sip:…`), which baresip
/// rewrites in place with `\r`.
pub fn clean_log(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() / 4);
    for line in raw.split('\n') {
        let segments: Vec<&str> = line
            .split('\r')
            .map(strip_status)
            .filter(|s| !s.trim().is_empty())
            .collect();
        for (i, seg) in segments.iter().enumerate() {
            let typed_on = segments
                .get(i + 1)
                .is_some_and(|next| next.starts_with(seg));
            if !typed_on {
                out.push_str(seg);
                out.push('\n');
            }
        }
    }
    out
}

/// Removes baresip's status line (`[0:00:05] audio=64000/64000 (bit/s)`), which
/// it rewrites in place with `\r` and which can prefix a real message.
pub fn strip_status(mut line: &str) -> &str {
    loop {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('[') {
            return line;
        }
        match trimmed.find("(bit/s)") {
            Some(i) if trimmed[..i].contains("] audio=") => line = &trimmed[i + "(bit/s)".len()..],
            _ => return line,
        }
    }
}

/// Calls ended according to a log. An established call ends with `terminated`,
/// preceded by `session closed` when the peer ended it; a call that never got
/// established ends with `session closed` alone (failed, cancelled) or, when this
/// phone rejected it, with `rejecting incoming call`.
pub fn calls_closed(log: &str) -> usize {
    let (mut closed, mut open, mut closed_by_peer) = (0usize, 0usize, 0usize);
    for line in log.lines() {
        if line.contains(ESTABLISHED) {
            open += 1;
        } else if line.contains(SESSION_CLOSED) {
            closed += 1;
            if open > closed_by_peer {
                closed_by_peer += 1;
            }
        } else if line.contains(TERMINATED) {
            open = open.saturating_sub(1);
            if closed_by_peer > 0 {
                closed_by_peer -= 1;
            } else {
                closed += 1;
            }
        } else if line.contains(REJECTED) {
            closed += 1;
        }
    }
    closed
}

/// Whether a WAV file's RIFF header accounts for the whole file (libsndfile
/// writes the sizes when it closes the file).
fn wav_complete(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    bytes.len() >= 44
        && &bytes[0..4] == b"RIFF"
        && u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 8 == bytes.len()
}
