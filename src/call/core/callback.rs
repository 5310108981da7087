//! Queue callbacks: the caller hangs up keeping its place; when the ACD has an agent on
//! the line, the caller's number is dialled back through the trunk and bridged.

use super::*;
use crate::ivr::interpreter::QueueResult;

#[derive(Default)]
pub(super) struct Callback {
    /// When to hang up on the caller (after the confirmation).
    bye_at: Option<Instant>,
    /// The INVITE that calls the caller back.
    dial: Option<Box<Fork>>,
}

impl Callback {
    pub(super) fn bye_at(&self) -> Option<Instant> {
        self.bye_at
    }

    /// The confirmation ends at `at`: the caller is hung up a moment later.
    pub(super) fn notice_heard(&mut self, at: Instant) {
        self.bye_at = Some(at + Duration::from_millis(300));
    }

    pub(super) fn is_dial(&self, tx: TxId) -> bool {
        self.dial.as_ref().is_some_and(|d| d.tx == tx)
    }
}

impl CallCore {
    /// Whether `key` asks for a callback: the caller waits in a queue that offers one
    /// (nobody rings yet), has a number to call back, and a trunk can dial out.
    pub(super) fn callback_offered(&self, key: char) -> bool {
        let Some(q) = &self.queue else { return false };
        let key_of_queue = self
            .rec
            .queue
            .as_deref()
            .and_then(|name| self.config.queues.iter().find(|c| c.name == name))
            .and_then(|c| c.callback_key);
        key_of_queue == Some(key)
            && !q.connected
            && !q.callback
            && q.offered.is_empty()
            && !self.rec.from_user.is_empty()
            && self.config.outbound_trunk().is_some()
    }

    /// The caller keeps its place without waiting on the line: confirm, then hang up.
    pub(super) fn request_callback(&mut self) {
        let Some(q) = &mut self.queue else { return };
        q.callback = true;
        self.acd(AcdCmd::CallbackRequested);
        info!(number = %self.rec.from_user, "callback requested");
        self.rec.reason = Some(format!("callback to {} requested", self.rec.from_user));
        if self.ivr.is_some() {
            self.ivr_cmd(IvrCmd::Notice("callback_confirm"));
        } else {
            self.callback.notice_heard(self.now.at);
        }
    }

    /// The confirmation was heard: hang up on the caller and keep its ports for the
    /// call back.
    pub(super) fn leave_for_callback(&mut self) -> Option<End> {
        self.callback.bye_at = None;
        self.hangup_both(Some(Side::A));
        self.a_dialog = None;
        // That leg's session is over; the call back is a dialog of its own.
        self.timer.stop();
        self.media(MediaCmd::KeepForCallback);
        None
    }

    /// The callback's agent is on the line: call the caller back through the trunk.
    pub(super) fn dial_caller_back(&mut self, agent: &str) -> Option<End> {
        let number = self.rec.from_user.clone();
        let Some((trunk, addr)) = self.config.outbound_trunk() else {
            self.hangup_both(Some(Side::B));
            return Some(End::failed(200, "callback: no trunk for outgoing calls"));
        };
        info!(%number, %trunk, %agent, "calling the caller back");
        let adv = host_str(self.advertise());
        let peer = Peer {
            transport: crate::config::Transport::Udp,
            addr,
        };
        let call_id = format!("{}@switchboard", message::random_token(20));
        let mut headers = rsip::Headers::default();
        headers.push(Header::From(rsip::headers::From::new(format!(
            "<sip:{}@{adv}>;tag={}",
            self.rec.dialed,
            message::new_tag()
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<sip:{number}@{}>",
            host_port(addr)
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id.clone())));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{}>",
            self.contacts.get(peer.transport)
        ))));
        headers.push(Header::Other(
            "X-Switchboard-Call".into(),
            self.rec.call_uuid.clone(),
        ));
        let uri = rsip::Uri::try_from(format!("sip:{number}@{}", host_port(addr)).as_str());
        let Ok(uri) = uri else {
            self.hangup_both(Some(Side::B));
            return Some(End::failed(
                200,
                &format!("callback: cannot dial \"{number}\""),
            ));
        };
        // Offer what the caller was answered with at first, on its old port. A new leg,
        // plain: the trunk's call back has nothing to do with the caller's keys.
        self.a_sdp.crypto = None;
        self.media(MediaCmd::CallerPlain);
        let offer = self.a_offer_sd.clone();
        let body = self.a_sdp.render(&offer, self.advertise(), self.a_port);
        let req = message::invite_with_sdp(uri, headers, body);
        self.push(Command::BindCallId(call_id));
        let tx = self.send(req.clone(), peer);
        self.callback.dial = Some(Box::new(Fork {
            tx,
            invite: req,
            peer,
            final_code: None,
            agent: Some(agent.to_string()),
            crypto: None,
        }));
        None
    }

    /// The call back failed (`code`, 408 when the trunk never answered): the waiting
    /// agent is hung up.
    pub(super) fn callback_failed(&mut self, code: u16) -> Option<End> {
        self.callback.dial.take()?;
        warn!(code, "the callback was not answered");
        self.hangup_both(Some(Side::B));
        Some(End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Failed,
            code,
            reason: Some(format!(
                "the callback to {} was not answered ({code})",
                self.rec.from_user
            )),
        })
    }

    /// The called-back caller's phone answered (bridge it to the waiting agent) or not.
    pub(super) fn on_callback_response(&mut self, resp: Response) -> Option<End> {
        let code = resp.status_code.code();
        if code < 200 {
            return None;
        }
        if code >= 300 {
            return self.callback_failed(code);
        }
        let dial = self.callback.dial.take()?;
        let contact = self.contacts.get(dial.peer.transport);
        let dialog = Dialog::from_response(&dial.invite, &resp, dial.peer, contact);
        self.ack(dialog.ack(1), dial.peer);
        self.a_dialog = Some(dialog);
        if let Ok((_, info)) = sdp::parse(&resp.body) {
            self.a_offer.rtp = info.rtp;
        }
        self.start_bridge(false);
        self.rec.bridged_ms = Some(self.now.wall_ms);
        let agent = dial.agent.clone();
        info!("called back and bridged");
        self.rec.reason = Some(format!("called back {}", self.rec.from_user));
        self.on_bridged(agent.clone());
        if let Some(q) = &mut self.queue {
            q.connected = true;
        }
        if let (Some(agent), Some(_)) = (agent, &self.ivr) {
            self.feed_ivr(crate::ivr::Event::QueueResult(QueueResult::Connected {
                agent,
            }));
        }
        None
    }
}
