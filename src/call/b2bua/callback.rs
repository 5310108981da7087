//! Queue callbacks: the caller hangs up keeping its place; when the ACD has an agent on
//! the line, the caller's number is dialled back through the trunk and bridged.

use super::*;

impl Call {
    /// The trunk that takes outgoing calls, if any: (name, address).
    pub(super) fn outbound_trunk(&self) -> Option<(String, std::net::SocketAddr)> {
        self.shared.config.outbound_trunk()
    }

    /// Whether `key` asks for a callback: the caller waits in a queue that offers one
    /// (nobody rings yet), has a number to call back, and a trunk can dial out.
    pub(super) fn callback_offered(&self, key: char) -> bool {
        let Some(q) = &self.queue else { return false };
        let key_of_queue = self
            .rec
            .queue
            .as_deref()
            .and_then(|name| self.shared.config.queues.iter().find(|c| c.name == name))
            .and_then(|c| c.callback_key);
        key_of_queue == Some(key)
            && !q.connected
            && !q.callback
            && q.offered.is_empty()
            && !self.rec.from_user.is_empty()
            && self.outbound_trunk().is_some()
    }

    /// The caller keeps its place without waiting on the line: confirm, then hang up.
    pub(super) fn request_callback(&mut self) {
        let Some(q) = &mut self.queue else { return };
        q.callback = true;
        q.acd.event(crate::acd::Event::CallbackRequested {
            call: CallId(self.key),
        });
        info!(number = %self.rec.from_user, "callback requested");
        self.rec.reason = Some(format!("callback to {} requested", self.rec.from_user));
        let heard = self
            .ivr
            .as_ref()
            .map_or(Duration::ZERO, |i| i.notice("callback_confirm"));
        self.callback_bye_at =
            Some(tokio::time::Instant::now() + heard + Duration::from_millis(300));
    }

    /// The confirmation was heard: hang up on the caller and keep its ports for the
    /// call back.
    pub(super) async fn leave_for_callback(&mut self) -> Option<End> {
        self.callback_bye_at = None;
        self.hangup_both(Some(Side::A)).await;
        self.a_dialog = None;
        // That leg's session is over; the call back is a dialog of its own.
        self.session_timer = None;
        self.session_due = None;
        self.refresh_tx = None;
        let endpoint = self.ivr.as_mut().and_then(|i| i.take_endpoint());
        if let Some(e) = endpoint {
            self.callback_ports = e.release().await;
        }
        None
    }

    /// The callback's agent is on the line: call the caller back through the trunk.
    pub(super) async fn dial_caller_back(&mut self, agent: &str) -> Option<End> {
        let number = self.rec.from_user.clone();
        let failed = |why: String| End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Failed,
            code: 200,
            reason: Some(why),
        };
        let Some((trunk, addr)) = self.outbound_trunk() else {
            self.hangup_both(Some(Side::B)).await;
            return Some(failed("callback: no trunk for outgoing calls".into()));
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
            self.shared.contact(peer.transport)
        ))));
        headers.push(Header::Other(
            "X-Switchboard-Call".into(),
            self.rec.call_uuid.clone(),
        ));
        let uri = rsip::Uri::try_from(format!("sip:{number}@{}", host_port(addr)).as_str());
        let Ok(uri) = uri else {
            self.hangup_both(Some(Side::B)).await;
            return Some(failed(format!("callback: cannot dial \"{number}\"")));
        };
        // Offer what the caller was answered with at first, on its old port.
        // A new leg, plain: the trunk's call back has nothing to do with the caller's keys.
        self.a_sdp.crypto = None;
        if let Some(ports) = &mut self.callback_ports {
            ports.set_srtp(None);
        }
        let offer = self.a_offer_sd.clone();
        let body = self.a_sdp.render(&offer, self.advertise(), self.a_port);
        let req = message::invite_with_sdp(uri, headers, body);
        self.sw.bind_call_id(self.key, call_id);
        let tx = self.sw.send(self.key, req.clone(), peer).await?;
        self.callback_dial = Some(Box::new(Fork {
            tx,
            invite: req,
            peer,
            final_code: None,
            agent: Some(agent.to_string()),
            crypto: None,
        }));
        None
    }

    /// The called-back caller's phone answered (bridge it to the waiting agent) or not.
    pub(super) async fn on_callback_response(&mut self, resp: Response) -> Option<End> {
        let code = resp.status_code.code();
        if code < 200 {
            return None;
        }
        let dial = self.callback_dial.take()?;
        if code >= 300 {
            warn!(code, "the callback was not answered");
            self.hangup_both(Some(Side::B)).await;
            return Some(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Failed,
                code,
                reason: Some(format!(
                    "the callback to {} was not answered ({code})",
                    self.rec.from_user
                )),
            });
        }
        let contact = self.shared.contact(dial.peer.transport);
        let dialog = Dialog::from_response(&dial.invite, &resp, dial.peer, contact);
        self.sw.send_ack(dialog.ack(1), dial.peer);
        self.a_dialog = Some(dialog);
        if let Ok((_, info)) = sdp::parse(&resp.body) {
            self.a_offer.rtp = info.rtp;
        }
        let (Some(a_ports), Some(b_ports)) = (self.callback_ports.take(), self.b_ports.take())
        else {
            warn!("the callback's media ports are gone");
            self.hangup_both(None).await;
            return Some(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Failed,
                code: 200,
                reason: Some("callback: no media ports".into()),
            });
        };
        self.start_bridge(a_ports, b_ports);
        self.rec.bridged_ms = Some(now_ms());
        let agent = dial.agent.clone();
        info!("called back and bridged");
        self.rec.reason = Some(format!("called back {}", self.rec.from_user));
        self.on_bridged(agent.clone());
        if let Some(q) = &mut self.queue {
            q.connected = true;
        }
        if let (Some(agent), Some(ivr)) = (agent, &mut self.ivr) {
            let steps = ivr.feed(crate::ivr::Event::QueueResult(QueueResult::Connected {
                agent,
            }));
            return self.on_ivr_steps(steps).await;
        }
        None
    }
}
