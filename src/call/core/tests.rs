//! Whole calls driven through the core in simulated time: no sockets, no tasks, no
//! sleeping. Each test plays the switch, the phones, the media and the ACD by hand and
//! checks the commands the call gives.

use std::path::Path;

use super::*;
use crate::call::ivr::IvrStep;
use crate::ivr::interpreter::QueueResult;

const CONFIG: &str = r#"
sip:
  listen: ["udp:127.0.0.1:5060"]
rtp:
  ports: "20000-20099"
calls:
  ring_timeout_secs: 20
users:
  - { extension: "2001", password: secret2001 }
  - { extension: "2002", password: secret2002 }
trunks:
  - name: carrier
    peers: ["127.0.0.9"]
    outbound: "127.0.0.9:5060"
queues:
  - name: support
    members: ["2001"]
    callback_key: "9"
"#;

const CALLER_SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

fn callee_sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

fn parse_request(raw: &str) -> Request {
    match message::parse(raw.as_bytes()).expect("a test request parses") {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("not a request"),
    }
}

fn with_body(head: &str, content_type: &str, body: &str) -> String {
    format!(
        "{head}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn caller_invite(extra: &str) -> Request {
    let head = format!(
        "INVITE sip:2001@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-caller\r\n\
         From: \"Ada\" <sip:1000@127.0.0.1>;tag=caller\r\nTo: <sip:2001@127.0.0.1>\r\n\
         Call-ID: a-call@test\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@127.0.0.1:5999>\r\n\
         Max-Forwards: 70\r\n{extra}"
    );
    parse_request(&with_body(&head, "application/sdp", CALLER_SDP))
}

/// A phone of `ext` at 127.0.0.<n>.
fn phone(ext: &str, n: u8) -> Binding {
    crate::call::trunk_binding(ext, format!("127.0.0.{n}:6000").parse().unwrap())
}

/// One call in simulated time, and every command it gave.
struct Sim {
    core: CallCore,
    t0: Instant,
    ms: u64,
    a_tx: TxId,
    cseq: u32,
}

impl Sim {
    fn new(start: Start) -> (Sim, Vec<Command>) {
        Sim::with_invite(start, caller_invite(""))
    }

    fn with_invite(start: Start, invite: Request) -> (Sim, Vec<Command>) {
        let config = crate::config::parse(Path::new("test.yaml"), CONFIG).expect("config");
        let record = CallRecord {
            call_uuid: "uuid-1".into(),
            a_call_id: "a-call@test".into(),
            from_user: "1000".into(),
            dialed: "2001".into(),
            target: Some("2001".into()),
            ..Default::default()
        };
        let offer = Offer::read(&config, &invite, &record).expect("the offer is good");
        let a_tx = TxId(7);
        let t0 = Instant::now();
        let setup = Setup {
            config: Arc::new(config),
            contacts: Contacts {
                udp: "sip:switchboard@127.0.0.1:5060".into(),
                tcp: "sip:switchboard@127.0.0.1:5060;transport=tcp".into(),
                tls: "sip:switchboard@127.0.0.1:5061;transport=tls".into(),
            },
            acd: true,
            ids: TxIds::new(),
            invite_tx: a_tx,
            invite,
            from: Peer {
                transport: Transport::Udp,
                addr: "127.0.0.1:5999".parse().unwrap(),
            },
            record,
            offer,
            a_port: 20000,
            b_port: 20002,
            route: "test",
        };
        let mut sim = Sim {
            core: CallCore::new(Now { at: t0, wall_ms: 0 }, setup),
            t0,
            ms: 0,
            a_tx,
            cseq: 10,
        };
        let now = sim.now();
        sim.core.start(now, start);
        let cmds = sim.drain();
        (sim, cmds)
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(self.ms),
            wall_ms: 1_000_000 + self.ms as i64,
        }
    }

    fn drain(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.core.poll_command()).collect()
    }

    fn input(&mut self, input: Input) -> Vec<Command> {
        let now = self.now();
        self.core.handle(now, input);
        self.drain()
    }

    /// Moves the clock on, running the timers that fall due on the way.
    fn advance(&mut self, ms: u64) -> Vec<Command> {
        let until = self.ms + ms;
        let mut cmds = Vec::new();
        while let Some(at) = self.core.poll_timeout() {
            let due = at.duration_since(self.t0).as_millis() as u64;
            if due > until {
                break;
            }
            self.ms = self.ms.max(due);
            let now = self.now();
            self.core.handle_timeout(now);
            cmds.extend(self.drain());
        }
        self.ms = until;
        cmds
    }

    /// The phone behind a sent INVITE answers `code` (with SDP on 2xx and 183).
    fn answer(&mut self, invite: &Request, tx: TxId, code: u16, port: u16) -> Vec<Command> {
        let mut resp = message::response_to(invite, code, Some("callee"));
        resp.headers
            .push(Header::Contact(rsip::headers::Contact::new(
                "<sip:2001@127.0.0.2:6000>",
            )));
        if code == 183 || (200..300).contains(&code) {
            let sdp = callee_sdp(port, "sendrecv");
            message::set_body(
                &mut resp.headers,
                &mut resp.body,
                "application/sdp",
                sdp.into_bytes(),
            );
        }
        self.input(Input::Response {
            tx,
            resp: Box::new(resp),
        })
    }

    /// A request from the callee in the dialog of `invite` (the fork it answered).
    fn callee_sends(
        &mut self,
        invite: &Request,
        method: &str,
        extra: &str,
        body: Option<&str>,
    ) -> Vec<Command> {
        self.cseq += 1;
        let call_id = message::call_id(&as_msg(invite));
        let head = format!(
            "{method} sip:switchboard@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.2:6000;branch=z9hG4bK-b{}\r\n\
             From: <sip:2001@127.0.0.1>;tag=callee\r\nTo: <sip:1000@127.0.0.1>;tag=ours\r\n\
             Call-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: <sip:2001@127.0.0.2:6000>\r\n\
             Max-Forwards: 70\r\n{extra}",
            self.cseq, self.cseq
        );
        let raw = match body {
            Some(b) => with_body(&head, "application/sdp", b),
            None => format!("{head}Content-Length: 0\r\n\r\n"),
        };
        self.input(Input::Request {
            tx: TxId(1000 + self.cseq as u64),
            req: Box::new(parse_request(&raw)),
        })
    }

    /// A request from the caller in its dialog.
    fn caller_sends(&mut self, method: &str) -> Vec<Command> {
        self.caller_sends_with(method, "")
    }

    /// A request from the caller in its dialog, with `extra` header lines.
    fn caller_sends_with(&mut self, method: &str, extra: &str) -> Vec<Command> {
        self.cseq += 1;
        let raw = format!(
            "{method} sip:switchboard@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-a{}\r\n\
             From: <sip:1000@127.0.0.1>;tag=caller\r\nTo: <sip:2001@127.0.0.1>;tag=ours\r\n\
             Call-ID: a-call@test\r\nCSeq: {} {method}\r\nMax-Forwards: 70\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            self.cseq, self.cseq
        );
        self.input(Input::Request {
            tx: TxId(2000 + self.cseq as u64),
            req: Box::new(parse_request(&raw)),
        })
    }

    /// The media is finished as asked: the record comes out.
    fn finish(&mut self, cmds: &[Command]) -> (CallRecord, Vec<Command>) {
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::Media(MediaCmd::Finish))),
            "the call did not end: {cmds:?}"
        );
        let done = self.input(Input::Finished {
            stats: RelayStats {
                a_in: 50,
                b_in: 40,
                ..Default::default()
            },
            ivr: None,
        });
        assert!(matches!(done.last(), Some(Command::Ended)), "{done:?}");
        assert!(self.core.is_done());
        let rec = done
            .iter()
            .find_map(|c| match c {
                Command::Submit(rec) => Some((**rec).clone()),
                _ => None,
            })
            .expect("a record");
        (rec, done)
    }
}

/// The requests sent, in order.
fn sent(cmds: &[Command]) -> Vec<(TxId, &Request, Peer)> {
    picked(cmds, |c| match c {
        Command::Send { tx, req, to } => Some((*tx, req, *to)),
        _ => None,
    })
}

fn sent_methods(cmds: &[Command]) -> Vec<Method> {
    sent(cmds).iter().map(|(_, r, _)| r.method).collect()
}

/// The responses given: (transaction, code).
fn responses(cmds: &[Command]) -> Vec<(TxId, u16)> {
    picked(cmds, |c| match c {
        Command::Respond { tx, resp } => Some((*tx, resp.status_code.code())),
        _ => None,
    })
}

/// The commands `pick` picks out, in order.
fn picked<'a, T>(cmds: &'a [Command], pick: impl Fn(&'a Command) -> Option<T>) -> Vec<T> {
    cmds.iter().filter_map(pick).collect()
}

fn media(cmds: &[Command]) -> Vec<&MediaCmd> {
    picked(cmds, |c| match c {
        Command::Media(m) => Some(m),
        _ => None,
    })
}

fn events(cmds: &[Command]) -> Vec<&'static str> {
    picked(cmds, |c| match c {
        Command::Publish(e) => Some(e.kind),
        _ => None,
    })
}

fn acd(cmds: &[Command]) -> Vec<&AcdCmd> {
    picked(cmds, |c| match c {
        Command::Acd(a) => Some(a),
        _ => None,
    })
}

fn invite_of(cmds: &[Command]) -> (TxId, Request) {
    let (tx, req, _) = sent(cmds)
        .into_iter()
        .find(|(_, r, _)| r.method == Method::Invite)
        .expect("an INVITE was sent");
    (tx, req.clone())
}

/// A call rung to 2001 and answered: the commands up to the answer.
fn answered_call() -> (Sim, Request) {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2)]));
    let (tx, invite) = invite_of(&cmds);
    sim.answer(&invite, tx, 200, 30000);
    (sim, invite)
}

#[test]
fn a_rung_call_is_answered_bridged_and_recorded_when_the_caller_hangs_up() {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2)]));
    // The bridge starts at once, aimed at the caller's SDP; one INVITE to the phone.
    let Some(MediaCmd::Bridge(spec)) = media(&cmds).first().copied() else {
        panic!("no bridge: {cmds:?}");
    };
    assert_eq!(spec.a_remote, Some("127.0.0.1:40000".parse().unwrap()));
    assert_eq!(spec.conversation, None);
    let (tx, invite) = invite_of(&cmds);
    assert_eq!(sent(&cmds)[0].2.addr, "127.0.0.2:6000".parse().unwrap());
    let body = String::from_utf8_lossy(&invite.body).to_string();
    assert!(
        body.contains("m=audio 20002 "),
        "the callee is offered our B port: {body}"
    );
    assert_eq!(events(&cmds), ["call.arrived"]);

    sim.ms = 300;
    let ringing = sim.answer(&invite, tx, 180, 0);
    assert_eq!(responses(&ringing), [(sim.a_tx, 180)]);

    sim.ms = 2_000;
    let answered = sim.answer(&invite, tx, 200, 30000);
    // ACK to the phone, 200 to the caller with our A port, the bridge told both formats.
    assert!(answered.iter().any(|c| matches!(c, Command::Ack { .. })));
    let ok = answered
        .iter()
        .find_map(|c| match c {
            Command::Respond { tx, resp } if *tx == sim.a_tx => Some(resp),
            _ => None,
        })
        .expect("the caller is answered");
    assert_eq!(ok.status_code.code(), 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 20000 "));
    assert!(media(&answered).iter().any(|m| matches!(
        m,
        MediaCmd::SetRemote { side: Side::B, addr } if addr.port() == 30000
    )));
    assert!(media(&answered).iter().any(|m| matches!(
        m,
        MediaCmd::Converse(Conversation {
            formats: Some(_),
            ..
        })
    )));
    assert!(answered
        .iter()
        .any(|c| matches!(c, Command::OnCall { extension, on: true } if extension == "2001")));
    assert_eq!(events(&answered), ["call.answered"]);
    assert_eq!(sim.core.phase(), Phase::Answered);

    sim.ms = 62_000;
    let bye = sim.caller_sends("BYE");
    assert_eq!(responses(&bye).last().map(|r| r.1), Some(200));
    assert_eq!(sent_methods(&bye), [Method::Bye], "the callee is hung up");
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.disposition, Some(Disposition::Answered));
    assert_eq!(rec.hangup_by, Some(HangupBy::Caller));
    assert_eq!(rec.ringing_ms, Some(1_000_300));
    assert_eq!(rec.answered_ms, Some(1_002_000));
    assert_eq!(rec.bridged_ms, Some(1_002_000));
    assert_eq!(rec.ended_ms, 1_062_000);
    assert_eq!((rec.a_rtp_in, rec.b_rtp_in), (50, 40));
}

#[test]
fn nobody_answering_gives_up_at_the_ring_timeout() {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2), phone("2001", 3)]));
    let forks: Vec<TxId> = sent(&cmds).iter().map(|s| s.0).collect();
    assert_eq!(forks.len(), 2, "both phones ring");
    assert!(sim.advance(19_999).is_empty(), "nothing before 20 s");
    let end = sim.advance(1);
    let cancelled: Vec<TxId> = end
        .iter()
        .filter_map(|c| match c {
            Command::Cancel { tx } => Some(*tx),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, forks);
    assert_eq!(responses(&end), [(sim.a_tx, 480)]);
    let (rec, _) = sim.finish(&end);
    assert_eq!(rec.disposition, Some(Disposition::NoAnswer));
    assert_eq!(rec.final_code, 480);
    assert_eq!(rec.ended_ms, 1_020_000);
}

#[test]
fn every_phone_failing_gives_the_caller_the_most_telling_answer() {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2), phone("2001", 3)]));
    let forks = sent(&cmds);
    let (a, b) = (
        (forks[0].0, forks[0].1.clone()),
        (forks[1].0, forks[1].1.clone()),
    );
    assert!(
        sim.answer(&a.1, a.0, 480, 0).is_empty(),
        "one phone left ringing"
    );
    let end = sim.answer(&b.1, b.0, 486, 0);
    assert_eq!(responses(&end), [(sim.a_tx, 486)]);
    let (rec, _) = sim.finish(&end);
    assert_eq!(rec.disposition, Some(Disposition::Busy));
}

#[test]
fn the_agent_holds_the_caller_on_music_and_takes_it_back() {
    let (mut sim, invite) = answered_call();
    let hold = sim.callee_sends(&invite, "INVITE", "", Some(&callee_sdp(30000, "sendonly")));
    // The caller leaves the bridge for music; the agent is answered here, recvonly.
    let park = media(&hold);
    assert!(matches!(park.as_slice(), [MediaCmd::Park { leg }] if leg.codec == Codec::Pcmu));
    assert_eq!(events(&hold), ["call.held"]);
    let ok = hold
        .iter()
        .find_map(|c| match c {
            Command::Respond { resp, .. } => Some(resp),
            _ => None,
        })
        .unwrap();
    assert_eq!(ok.status_code.code(), 200);
    let body = String::from_utf8_lossy(&ok.body);
    assert!(body.contains("a=recvonly"), "{body}");
    assert!(sent(&hold).is_empty(), "the caller is not asked");
    // Counters of the bridge that was taken apart count toward the record.
    sim.input(Input::MediaStats(RelayStats {
        a_in: 7,
        ..Default::default()
    }));

    let resume = sim.callee_sends(&invite, "INVITE", "", Some(&callee_sdp(30004, "sendrecv")));
    let bridge = media(&resume);
    let [MediaCmd::Bridge(spec)] = bridge.as_slice() else {
        panic!("no new bridge: {resume:?}");
    };
    assert_eq!(spec.b_remote.map(|a| a.port()), Some(30004));
    assert!(
        spec.conversation.is_some(),
        "the new bridge carries the conversation"
    );
    assert_eq!(events(&resume), ["call.resumed"]);
    assert_eq!(responses(&resume).last().map(|r| r.1), Some(200));

    let bye = sim.callee_sends(&invite, "BYE", "", None);
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.hangup_by, Some(HangupBy::Callee));
    assert_eq!(rec.a_rtp_in, 57);
}

#[test]
fn a_caller_reinvite_is_relayed_to_the_agent_and_its_answer_back() {
    let (mut sim, _) = answered_call();
    sim.cseq += 1;
    let head = format!(
        "INVITE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-re\r\n\
         From: <sip:1000@127.0.0.1>;tag=caller\r\nTo: <sip:2001@127.0.0.1>;tag=ours\r\n\
         Call-ID: a-call@test\r\nCSeq: {} INVITE\r\nMax-Forwards: 70\r\n",
        sim.cseq
    );
    let req = parse_request(&with_body(
        &head,
        "application/sdp",
        &CALLER_SDP.replace("sendrecv", "sendonly"),
    ));
    let server_tx = TxId(99);
    let out = sim.input(Input::Request {
        tx: server_tx,
        req: Box::new(req),
    });
    let sent_out = sent(&out);
    let [(tx, reinvite, _)] = sent_out.as_slice() else {
        panic!("one re-INVITE to the agent: {out:?}");
    };
    let body = String::from_utf8_lossy(&reinvite.body);
    assert!(
        body.contains("a=sendonly") && body.contains("m=audio 20002 "),
        "{body}"
    );
    // On hold, neither side owes RTP.
    assert!(media(&out).iter().any(|m| matches!(
        m,
        MediaCmd::Watch {
            side: Side::A,
            on: false
        }
    )));
    let answered = sim.answer(&(*reinvite).clone(), *tx, 200, 30000);
    assert_eq!(responses(&answered), [(server_tx, 200)]);
    assert!(
        answered.iter().any(|c| matches!(c, Command::Ack { .. })),
        "the agent's 2xx is ACKed"
    );
}

#[test]
fn a_refer_sends_the_caller_on_to_another_extension() {
    let (mut sim, invite) = answered_call();
    let refer = sim.callee_sends(&invite, "REFER", "Refer-To: <sip:2002@127.0.0.1>\r\n", None);
    let Some(Command::Lookup { extension, purpose }) = refer.first() else {
        panic!("the target's phones are looked up: {refer:?}");
    };
    assert_eq!(extension, "2002");
    let phones = sim.input(Input::Phones {
        purpose: purpose.clone(),
        phones: vec![phone("2002", 4)],
    });
    assert_eq!(responses(&phones)[0].1, 202);
    // NOTIFY and BYE to the agent, then the new INVITE to 2002, the caller on music.
    assert_eq!(
        sent_methods(&phones),
        [Method::Notify, Method::Bye, Method::Invite]
    );
    assert_eq!(sent(&phones)[2].2.addr, "127.0.0.4:6000".parse().unwrap());
    assert!(media(&phones)
        .iter()
        .any(|m| matches!(m, MediaCmd::Park { .. })));
    assert_eq!(events(&phones), ["call.transferred"]);
    assert!(phones
        .iter()
        .any(|c| matches!(c, Command::OnCall { extension, on: false } if extension == "2001")));
    assert_eq!(sim.core.phase(), Phase::Ringing);

    let (tx, invite2) = invite_of(&phones);
    let answered = sim.answer(&invite2, tx, 200, 30010);
    // The caller was answered long ago: only the media moves.
    assert!(responses(&answered).iter().all(|r| r.0 != sim.a_tx));
    assert!(media(&answered)
        .iter()
        .any(|m| matches!(m, MediaCmd::Bridge(_))));
    let bye = sim.caller_sends("BYE");
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.target.as_deref(), Some("2002"));
    assert_eq!(rec.reason.as_deref(), Some("transferred by 2001 to 2002"));
}

#[test]
fn a_refer_to_an_extension_with_no_phone_is_refused_and_the_call_goes_on() {
    let (mut sim, invite) = answered_call();
    let refer = sim.callee_sends(&invite, "REFER", "Refer-To: <sip:2002@127.0.0.1>\r\n", None);
    let Some(Command::Lookup { purpose, .. }) = refer.first() else {
        panic!("{refer:?}");
    };
    let none = sim.input(Input::Phones {
        purpose: purpose.clone(),
        phones: vec![],
    });
    assert_eq!(
        responses(&none).iter().map(|r| r.1).collect::<Vec<_>>(),
        [404]
    );
    assert!(sent(&none).is_empty() && media(&none).is_empty());
    assert_eq!(sim.core.phase(), Phase::Answered);
}

#[test]
fn a_queued_caller_is_offered_to_an_agent_connected_and_back_in_the_flow_after() {
    let flows = Arc::new(FlowSet::default());
    let (mut sim, cmds) = Sim::new(Start::Flow {
        flows,
        name: "main".into(),
    });
    // Answered here on one codec, our endpoint, the flow started.
    assert_eq!(responses(&cmds), [(sim.a_tx, 200)]);
    assert!(matches!(
        media(&cmds).as_slice(),
        [MediaCmd::AnswerHere { leg, .. }] if leg.codec == Codec::Pcmu
    ));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Ivr(IvrCmd::Start { .. }))));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Ivr(IvrCmd::Feed(crate::ivr::Event::Started { .. }))
    )));

    let queued = sim.input(Input::IvrSteps(IvrReport {
        steps: vec![IvrStep::Enqueue {
            queue: "support".into(),
            skills: vec![],
            priority: 5,
        }],
        nodes: vec![("main".into(), "q".into(), "queue")],
        call_data: [("account".to_string(), "42".to_string())].into(),
        running: true,
    }));
    assert_eq!(
        acd(&queued),
        [&AcdCmd::Enqueue {
            queue: "support".into(),
            skills: vec![],
            priority: 5
        }]
    );
    assert_eq!(events(&queued), ["ivr.step", "call.queued"]);
    assert!(queued
        .iter()
        .any(|c| matches!(c, Command::Ivr(IvrCmd::HoldMusic))));

    let offer = sim.input(Input::Acd(AcdMsg::Offer {
        agent: "2001".into(),
    }));
    let Some(Command::Lookup { purpose, .. }) = offer.first() else {
        panic!("{offer:?}");
    };
    let ring = sim.input(Input::Phones {
        purpose: purpose.clone(),
        phones: vec![phone("2001", 2)],
    });
    let (tx, invite) = invite_of(&ring);
    // Screen pop: the flow's data rides on the INVITE.
    assert_eq!(
        message::other_header(&invite.headers, "X-Switchboard-account"),
        Some("42")
    );
    assert_eq!(sim.core.phase(), Phase::Ringing);

    let answered = sim.answer(&invite, tx, 200, 30000);
    assert!(media(&answered).iter().any(|m| matches!(
        m,
        MediaCmd::Bridge(BridgeSpec {
            conversation: None,
            ..
        })
    )));
    assert_eq!(
        acd(&answered),
        [&AcdCmd::Answered {
            agent: "2001".into()
        }]
    );
    assert!(answered.iter().any(|c| matches!(
        c,
        Command::Ivr(IvrCmd::Feed(crate::ivr::Event::QueueResult(
            QueueResult::Connected { .. }
        )))
    )));

    // The agent hangs up: the caller goes back to the flow (a survey), not away.
    let agent_bye = sim.callee_sends(&invite, "BYE", "", None);
    assert_eq!(
        acd(&agent_bye),
        [&AcdCmd::Ended(crate::acd::CallEnd::Agent)]
    );
    assert!(media(&agent_bye)
        .iter()
        .any(|m| matches!(m, MediaCmd::ToIvr { .. })));
    assert!(agent_bye.iter().any(|c| matches!(
        c,
        Command::Ivr(IvrCmd::Feed(crate::ivr::Event::AgentHungUp))
    )));
    assert!(!sim.core.is_done());

    let hangup = sim.input(Input::IvrSteps(IvrReport {
        steps: vec![IvrStep::Hangup],
        running: false,
        ..Default::default()
    }));
    assert_eq!(sent_methods(&hangup), [Method::Bye]);
    let (rec, _) = sim.finish(&hangup);
    assert_eq!(rec.queue.as_deref(), Some("support"));
    assert_eq!(rec.flow.as_deref(), Some("main"));
    assert_eq!(rec.reason.as_deref(), Some("the flow hung up"));
}

/// A flow call waiting in `support`.
fn queued() -> Sim {
    let (mut sim, _) = Sim::new(Start::Flow {
        flows: Arc::new(FlowSet::default()),
        name: "main".into(),
    });
    sim.input(Input::IvrSteps(IvrReport {
        steps: vec![IvrStep::Enqueue {
            queue: "support".into(),
            skills: vec![],
            priority: 0,
        }],
        running: true,
        ..Default::default()
    }));
    sim
}

/// The ACD offers the call to 2001, whose one phone rings: the INVITE and its tx.
fn offer_to_2001(sim: &mut Sim) -> (TxId, Request) {
    let offer = sim.input(Input::Acd(AcdMsg::Offer {
        agent: "2001".into(),
    }));
    let Some(Command::Lookup { purpose, .. }) = offer.first() else {
        panic!("the agent's phones are looked up: {offer:?}");
    };
    let ring = sim.input(Input::Phones {
        purpose: purpose.clone(),
        phones: vec![phone("2001", 2)],
    });
    invite_of(&ring)
}

/// A flow call waiting in `support`, with 2001's phone ringing.
fn queued_and_ringing() -> (Sim, TxId, Request) {
    let mut sim = queued();
    let (tx, invite) = offer_to_2001(&mut sim);
    (sim, tx, invite)
}

#[test]
fn an_offer_withdrawn_then_answered_late_is_hung_up_and_the_caller_keeps_waiting() {
    let (mut sim, tx, invite) = queued_and_ringing();
    let withdrawn = sim.input(Input::Acd(AcdMsg::CancelOffer {
        agent: "2001".into(),
    }));
    assert!(withdrawn
        .iter()
        .any(|c| matches!(c, Command::Cancel { tx: t } if *t == tx)));
    assert_eq!(sim.core.phase(), Phase::Ivr);
    // The phone's 200 crossed our CANCEL.
    let late = sim.answer(&invite, tx, 200, 30000);
    assert!(late.iter().any(|c| matches!(c, Command::Ack { .. })));
    assert_eq!(sent_methods(&late), [Method::Bye]);
    assert!(media(&late).is_empty() && acd(&late).is_empty(), "{late:?}");
    assert_eq!(sim.core.phase(), Phase::Ivr);
}

#[test]
fn a_caller_hanging_up_while_an_agent_rings_abandons_the_queue() {
    let (mut sim, tx, _) = queued_and_ringing();
    let bye = sim.caller_sends("BYE");
    assert!(bye
        .iter()
        .any(|c| matches!(c, Command::Cancel { tx: t } if *t == tx)));
    assert_eq!(acd(&bye), [&AcdCmd::Abandoned]);
    assert!(bye.iter().any(|c| matches!(
        c,
        Command::Ivr(IvrCmd::Feed(crate::ivr::Event::CallerHungUp))
    )));
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.disposition, Some(Disposition::Abandoned));
    assert_eq!(rec.reason.as_deref(), Some("caller hung up in the queue"));
}

#[test]
fn a_cancel_overtaking_the_answer_hangs_the_callee_up() {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2)]));
    let (tx, invite) = invite_of(&cmds);
    let answered = sim.answer(&invite, tx, 200, 30000);
    assert_eq!(responses(&answered), [(sim.a_tx, 200)]);
    // The caller's CANCEL was answered 487 by the switch before our 200 went out.
    let a_tx = sim.a_tx;
    let cancelled = sim.input(Input::Cancelled { tx: a_tx });
    assert_eq!(sent_methods(&cancelled), [Method::Bye]);
    assert_eq!(
        sent(&cancelled)[0].2.addr,
        "127.0.0.2:6000".parse().unwrap()
    );
    let (rec, _) = sim.finish(&cancelled);
    assert_eq!(rec.disposition, Some(Disposition::Abandoned));
    assert_eq!(rec.final_code, 487);
}

#[test]
fn a_second_phone_answering_after_the_first_is_hung_up() {
    let (mut sim, cmds) = Sim::new(Start::Ring(vec![phone("2001", 2), phone("2001", 3)]));
    let forks = sent(&cmds);
    let (a, b) = (
        (forks[0].0, forks[0].1.clone()),
        (forks[1].0, forks[1].1.clone()),
    );
    let first = sim.answer(&a.1, a.0, 200, 30000);
    assert!(first
        .iter()
        .any(|c| matches!(c, Command::Cancel { tx } if *tx == b.0)));
    let second = sim.answer(&b.1, b.0, 200, 30002);
    assert!(second.iter().any(|c| matches!(c, Command::Ack { .. })));
    assert_eq!(sent_methods(&second), [Method::Bye]);
    assert_eq!(sent(&second)[0].2.addr, "127.0.0.3:6000".parse().unwrap());
    assert!(
        responses(&second).is_empty(),
        "the caller hears nothing of it"
    );
    assert_eq!(sim.core.phase(), Phase::Answered);
}

#[test]
fn a_transfer_by_the_api_whose_call_ends_meanwhile_is_answered_no_less() {
    let (mut sim, _) = answered_call();
    let asked = sim.input(Input::Api {
        cmd: ApiCommand::Transfer {
            extension: "2002".into(),
        },
        by: "supervisor".into(),
        token: 3,
    });
    let Some(Command::Lookup { purpose, .. }) = asked.first() else {
        panic!("{asked:?}");
    };
    // The caller hangs up before the switch answers the lookup.
    let bye = sim.caller_sends("BYE");
    let late = sim.input(Input::Phones {
        purpose: purpose.clone(),
        phones: vec![phone("2002", 4)],
    });
    assert!(
        late.iter().any(|c| matches!(
            c,
            Command::ApiReply {
                token: 3,
                answer: Err(_)
            }
        )),
        "{late:?}"
    );
    assert!(sent(&late).is_empty(), "nobody is rung for an ended call");
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.hangup_by, Some(HangupBy::Caller));
}

#[test]
fn hold_and_recording_by_the_api() {
    let (mut sim, _) = answered_call();
    let held = sim.input(Input::Api {
        cmd: ApiCommand::Hold(true),
        by: "api".into(),
        token: 1,
    });
    assert!(held
        .iter()
        .any(|c| matches!(c, Command::ApiReply { token: 1, answer: Ok(a) } if a == "held")));
    assert!(media(&held)
        .iter()
        .any(|m| matches!(m, MediaCmd::Park { .. })));
    let resumed = sim.input(Input::Api {
        cmd: ApiCommand::Hold(false),
        by: "api".into(),
        token: 2,
    });
    assert!(media(&resumed)
        .iter()
        .any(|m| matches!(m, MediaCmd::Bridge(_))));
    let start = sim.input(Input::Api {
        cmd: ApiCommand::Recording(crate::call::RecordingAction::Start),
        by: "api".into(),
        token: 3,
    });
    assert!(media(&start).iter().any(|m| matches!(
        m,
        MediaCmd::Record { path, .. } if path.ends_with("recordings/uuid-1.wav")
    )));
    let stop = sim.input(Input::Api {
        cmd: ApiCommand::Recording(crate::call::RecordingAction::Stop),
        by: "api".into(),
        token: 4,
    });
    assert!(media(&stop)
        .iter()
        .any(|m| matches!(m, MediaCmd::StopRecording)));
    sim.input(Input::RecordingFinished(RecordingOutcome::Written {
        ms: 4_321,
    }));
    let bye = sim.caller_sends("BYE");
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.recording.as_deref(), Some("recordings/uuid-1.wav"));
    assert_eq!(rec.recording_ms, Some(4_321));
}

#[test]
fn a_caller_that_stops_refreshing_its_session_is_hung_up_in_time() {
    let invite = caller_invite("Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n");
    let (mut sim, cmds) = Sim::with_invite(Start::Ring(vec![phone("2001", 2)]), invite);
    let (tx, invite) = invite_of(&cmds);
    sim.answer(&invite, tx, 200, 30000);
    // 90 s, less the smaller of 32 s and a third: 60 s after the answer.
    assert!(sim.advance(59_999).is_empty());
    let end = sim.advance(1);
    assert_eq!(sent_methods(&end), [Method::Bye, Method::Bye]);
    let (rec, _) = sim.finish(&end);
    assert_eq!(
        rec.reason.as_deref(),
        Some("session timer expired: the caller stopped refreshing")
    );
}

#[test]
fn a_supervisor_asking_for_an_idle_agent_hears_so_and_is_hung_up() {
    let (mut sim, cmds) = Sim::new(Start::Supervise {
        agent: "2001".into(),
        mode: Mode::Listen,
    });
    assert!(media(&cmds)
        .iter()
        .any(|m| matches!(m, MediaCmd::JoinAgent { agent, .. } if agent == "2001")));
    let no_call = sim.input(Input::SupervisorNoCall);
    assert!(media(&no_call).iter().any(|m| matches!(
        m,
        MediaCmd::Play { prompt } if prompt == "en/supervisor_no_call.wav"
    )));
    // The prompt never ends: the call does after 10 s.
    assert!(sim.advance(9_999).is_empty());
    let end = sim.advance(1);
    assert_eq!(sent_methods(&end), [Method::Bye]);
    let (rec, _) = sim.finish(&end);
    assert_eq!(rec.reason.as_deref(), Some("2001 is not on a call"));
}

#[test]
fn a_caller_transferred_into_a_queue_that_gives_up_is_hung_up() {
    let (mut sim, _) = answered_call();
    let moved = sim.input(Input::Api {
        cmd: ApiCommand::TransferToQueue {
            queue: "support".into(),
        },
        by: "api".into(),
        token: 1,
    });
    assert!(moved.iter().any(|c| matches!(
        c,
        Command::ApiReply { token: 1, answer: Ok(a) } if a == "transferred to queue support"
    )));
    // The agent is let go, the caller waits on music in the queue.
    assert_eq!(sent_methods(&moved), [Method::Bye]);
    assert!(media(&moved)
        .iter()
        .any(|m| matches!(m, MediaCmd::Park { .. })));
    assert!(
        matches!(acd(&moved).as_slice(), [AcdCmd::Enqueue { queue, .. }] if queue == "support")
    );
    assert_eq!(events(&moved), ["call.transferred", "call.queued"]);

    let gave_up = sim.input(Input::Acd(AcdMsg::Overflow {
        reason: "nobody is logged in".into(),
    }));
    assert_eq!(sent_methods(&gave_up), [Method::Bye]);
    assert_eq!(sent(&gave_up)[0].2.addr, "127.0.0.1:5999".parse().unwrap());
    let (rec, _) = sim.finish(&gave_up);
    assert_eq!(
        rec.reason.as_deref(),
        Some("the queue gave up on the transferred caller: nobody is logged in")
    );
}

/// A queued caller asked for a callback and was hung up; 2001 answered and waits while
/// the caller is dialled: the agent's INVITE, and the call back's tx and INVITE.
fn callback_dialled() -> (Sim, Request, TxId, Request) {
    let mut sim = queued();
    let asked = sim.input(Input::IvrEvent {
        event: crate::ivr::Event::Digit('9'),
        media_timed_out: false,
    });
    assert_eq!(acd(&asked), [&AcdCmd::CallbackRequested]);
    assert!(asked
        .iter()
        .any(|c| matches!(c, Command::Ivr(IvrCmd::Notice("callback_confirm")))));
    // The confirmation lasts 2 s; the caller is hung up just after it.
    assert!(sim
        .input(Input::NoticeLength(Duration::from_secs(2)))
        .is_empty());
    assert!(sim.advance(2_299).is_empty());
    let left = sim.advance(1);
    assert_eq!(sent_methods(&left), [Method::Bye]);
    assert!(media(&left)
        .iter()
        .any(|m| matches!(m, MediaCmd::KeepForCallback)));

    // An agent answers: it waits on the line while the caller is dialled.
    let (tx, agent_invite) = offer_to_2001(&mut sim);
    let agent = sim.answer(&agent_invite, tx, 200, 30000);
    assert_eq!(
        acd(&agent),
        [&AcdCmd::Answered {
            agent: "2001".into()
        }]
    );
    assert!(!media(&agent)
        .iter()
        .any(|m| matches!(m, MediaCmd::Bridge(_))));

    let dial = sim.input(Input::Acd(AcdMsg::DialCaller {
        agent: "2001".into(),
    }));
    assert!(media(&dial)
        .iter()
        .any(|m| matches!(m, MediaCmd::CallerPlain)));
    let (dial_tx, back) = invite_of(&dial);
    assert_eq!(sent(&dial)[0].2.addr, "127.0.0.9:5060".parse().unwrap());
    assert_eq!(back.uri.to_string(), "sip:1000@127.0.0.9:5060");
    let body = String::from_utf8_lossy(&back.body);
    assert!(
        body.contains("m=audio 20000 "),
        "the caller's old port: {body}"
    );
    (sim, agent_invite, dial_tx, back)
}

#[test]
fn a_caller_asking_for_a_callback_is_hung_up_and_called_back_when_an_agent_answers() {
    let (mut sim, agent_invite, dial_tx, back) = callback_dialled();
    let bridged = sim.answer(&back, dial_tx, 200, 30020);
    assert!(media(&bridged)
        .iter()
        .any(|m| matches!(m, MediaCmd::Bridge(_))));
    assert!(media(&bridged)
        .iter()
        .any(|m| matches!(m, MediaCmd::Converse(_))));
    // The flow is over: the agent's BYE ends the call.
    sim.input(Input::IvrSteps(IvrReport {
        running: false,
        ..Default::default()
    }));
    let bye = sim.callee_sends(&agent_invite, "BYE", "", None);
    let (rec, _) = sim.finish(&bye);
    assert_eq!(rec.reason.as_deref(), Some("called back 1000"));
    assert_eq!(rec.hangup_by, Some(HangupBy::Callee));
}

#[test]
fn a_call_back_the_trunk_never_answers_lets_the_waiting_agent_go() {
    let (mut sim, _, dial_tx, _) = callback_dialled();
    let timeout = sim.input(Input::Timeout { tx: dial_tx });
    assert_eq!(sent_methods(&timeout), [Method::Bye]);
    assert_eq!(sent(&timeout)[0].2.addr, "127.0.0.2:6000".parse().unwrap());
    // The caller was never reached: to the queue, it left unanswered.
    assert_eq!(acd(&timeout), [&AcdCmd::Abandoned]);
    let (rec, _) = sim.finish(&timeout);
    assert_eq!(rec.final_code, 408);
    assert_eq!(rec.disposition, Some(Disposition::Failed));
}

#[test]
fn an_answered_rings_timer_does_not_hang_up_the_caller_later_in_a_queue() {
    let (mut sim, _) = answered_call();
    sim.ms = 8_000;
    sim.input(Input::Api {
        cmd: ApiCommand::TransferToQueue {
            queue: "support".into(),
        },
        by: "api".into(),
        token: 1,
    });
    sim.ms = 12_000;
    let (_, invite) = offer_to_2001(&mut sim);
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(sim.core.phase(), Phase::Ringing);
    // The first ring's 20 s are long past: the caller still waits for the agent.
    let later = sim.advance(30_000);
    assert!(
        sent(&later).is_empty() && responses(&later).is_empty(),
        "{later:?}"
    );
    assert!(!sim.core.is_done());
}

#[test]
fn a_session_refresh_on_a_supervisors_call_keeps_it_up() {
    let invite = caller_invite("Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n");
    let (mut sim, _) = Sim::with_invite(
        Start::Supervise {
            agent: "2001".into(),
            mode: Mode::Listen,
        },
        invite,
    );
    sim.input(Input::SupervisorJoined);
    for _ in 0..3 {
        assert!(sim.advance(45_000).is_empty(), "the session was refreshed");
        let refresh = sim.caller_sends_with(
            "UPDATE",
            "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        );
        assert_eq!(responses(&refresh).last().map(|r| r.1), Some(200));
    }
    // No refresh for 60 s: hung up.
    let end = sim.advance(60_000);
    assert_eq!(sent_methods(&end), [Method::Bye]);
    assert!(media(&end)
        .iter()
        .any(|m| matches!(m, MediaCmd::Unsupervise)));
}

#[test]
fn screen_pop_headers_are_safe_tokens_and_single_lines() {
    let data = [
        ("customer_name", "Ada\r\nX-Evil: 1"),
        ("tier", "gold"),
        ("", "nameless"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let headers = forking::screen_pop_headers(&data);
    assert_eq!(
        headers,
        vec![
            (
                "X-Switchboard-customer-name".to_string(),
                "AdaX-Evil: 1".to_string()
            ),
            ("X-Switchboard-tier".to_string(), "gold".to_string()),
        ]
    );
}
