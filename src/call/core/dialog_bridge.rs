//! Requests inside the call's dialogs: BYE ends the call (or sends the caller back to
//! its flow when the agent leaves), the agent's hold is answered with music, REFER
//! transfers, and everything else is re-originated on the other leg with its SDP
//! rewritten so the media stays on our ports.

use super::*;

impl CallCore {
    pub(super) fn side_of(&self, req: &Request) -> Option<Side> {
        let id = message::call_id(&as_msg(req));
        if self.a_dialog.as_ref().is_some_and(|d| d.id.call_id == id) || id == self.rec.a_call_id {
            Some(Side::A)
        } else if self.b_dialog.as_ref().is_some_and(|d| d.id.call_id == id) {
            Some(Side::B)
        } else {
            None
        }
    }

    /// The SDP we send on `side`, carrying `from`'s media anchored at that leg's port.
    pub(super) fn render_sdp(&mut self, side: Side, from: &rtc_sdp::SessionDescription) -> String {
        let ip = self.advertise();
        match side {
            Side::A => self.a_sdp.render(from, ip, self.a_port),
            Side::B => self.b_sdp.render(from, ip, self.b_port),
        }
    }

    pub(super) fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => self.a_dialog.as_mut(),
            Side::B => self.b_dialog.as_mut(),
        }
    }

    /// Sends BYE on the given leg, or on both.
    pub(super) fn hangup_both(&mut self, only: Option<Side>) {
        for side in [Side::A, Side::B] {
            if only.is_some_and(|o| o != side) {
                continue;
            }
            if let Some(d) = self.dialog_mut(side) {
                let bye = d.request(Method::Bye);
                let peer = d.destination();
                self.send(bye, peer);
            }
        }
    }

    pub(super) fn on_request(&mut self, tx: TxId, req: Request) -> Option<End> {
        if matches!(self.phase, Phase::Announcing | Phase::Supervising) {
            return self.on_request_while_supervising(tx, req);
        }
        let reply = |core: &mut CallCore, code: u16| {
            core.respond(tx, message::response_to(&req, code, None))
        };
        let Some(side) = self.side_of(&req) else {
            reply(self, 481);
            return None;
        };
        let bridged = self.phase == Phase::Answered;
        let Some(dialog) = self.dialog_mut(side) else {
            // Not answered yet: only the caller's early dialog exists.
            reply(self, if req.method == Method::Bye { 481 } else { 491 });
            return None;
        };
        if !dialog.accept_remote_cseq(&req) {
            reply(self, 500);
            return None;
        }
        match req.method {
            Method::Bye => {
                reply(self, 200);
                self.on_bye(side)
            }
            Method::Options => {
                reply(self, 200);
                None
            }
            Method::Refer if side == Side::B && bridged => self.blind_transfer(tx, req),
            Method::Invite | Method::Update | Method::Info => self.on_in_dialog(side, tx, req),
            _ => {
                reply(self, 405);
                None
            }
        }
    }

    fn on_bye(&mut self, side: Side) -> Option<End> {
        let agent_left = side == Side::B
            && self.queue.as_ref().is_some_and(|q| q.connected)
            && self.ivr.as_ref().is_some_and(|i| i.running);
        if agent_left {
            return self.back_to_flow_after_agent();
        }
        self.hangup_both(Some(other(side)));
        // A caller leaving before the bridge: in the flow, or while the transfer rang.
        let (disposition, reason) = match self.phase {
            Phase::Ringing => {
                self.cancel_forks(None);
                (
                    Disposition::Abandoned,
                    Some("caller hung up while the transfer rang"),
                )
            }
            Phase::Ivr => (Disposition::Answered, Some("caller hung up in the IVR")),
            _ => (Disposition::Answered, None),
        };
        // A caller still waiting in a queue abandoned it.
        let (disposition, reason) = match &self.queue {
            Some(q) if !q.connected => {
                self.cancel_forks(None);
                (Disposition::Abandoned, Some("caller hung up in the queue"))
            }
            _ => (disposition, reason),
        };
        if self.ivr.as_ref().is_some_and(|i| i.running) {
            self.feed_ivr(crate::ivr::Event::CallerHungUp);
        }
        Some(End {
            by: if side == Side::A {
                HangupBy::Caller
            } else {
                HangupBy::Callee
            },
            disposition,
            code: 200,
            reason: reason.map(str::to_string),
        })
    }

    /// A re-INVITE, UPDATE or INFO from one leg.
    fn on_in_dialog(&mut self, side: Side, tx: TxId, req: Request) -> Option<End> {
        if req.method != Method::Info {
            if let Some(dialog) = self.dialog_mut(side) {
                dialog.refresh_target(&req.headers);
            }
        }
        if side == Side::A && req.method != Method::Info {
            self.on_caller_refresh(&req);
            // A bodiless UPDATE only refreshes the session: it is answered here.
            if req.method == Method::Update && req.body.is_empty() {
                let ok = self.ok_to_caller_refresh(&req);
                self.respond(tx, ok);
                return None;
            }
        }
        if side == Side::B && req.method == Method::Invite && !req.body.is_empty() {
            if let Some(answered) = self.agent_hold(tx, &req) {
                return answered;
            }
        }
        if self.b_dialog.is_none() {
            self.answer_with_no_other_leg(side, tx, &req);
            return None;
        }
        if req.method == Method::Info {
            let ct = message::content_type(&as_msg(&req)).unwrap_or_default();
            if let Ok(d) = crate::media::dtmf::parse_sip_info(&ct, &req.body) {
                if side == Side::B {
                    self.on_agent_key(d.key.as_char());
                }
                // A key is the call's, not the other party's, unless configured.
                if !self.config.forward_dtmf {
                    self.respond(tx, message::response_to(&req, 200, None));
                    return None;
                }
            }
        }
        self.relay_request(side, tx, req);
        None
    }

    /// No other leg yet (the IVR has the caller): answer here, keeping the media as it
    /// is. A key sent by INFO is the flow's.
    fn answer_with_no_other_leg(&mut self, side: Side, tx: TxId, req: &Request) {
        if let (Method::Info, Side::A, Some(_)) = (&req.method, side, &self.ivr) {
            if let Some(ct) = message::content_type(&as_msg(req)) {
                self.ivr_cmd(IvrCmd::SipInfo {
                    content_type: ct,
                    body: req.body.clone(),
                });
            }
        }
        // A caller holding us sends no RTP meanwhile: no media timeout then.
        if let (Some(_), Ok((_, info))) = (&self.ivr, sdp::parse(&req.body)) {
            use crate::media::sdp::Direction;
            let talking = matches!(info.direction, Direction::SendRecv | Direction::RecvOnly);
            let timeout = talking.then_some(self.config.media_timeout).flatten();
            self.ivr_cmd(IvrCmd::WatchMedia(timeout));
        }
        // An INFO whose body we cannot read (no Info-Package, RFC 6086 §1): 415 and what
        // we accept. An empty INFO is a keep-alive: 200.
        if req.method == Method::Info && !req.body.is_empty() {
            let ct = message::content_type(&as_msg(req)).unwrap_or_default();
            if !ct.to_ascii_lowercase().starts_with("application/dtmf") {
                let mut resp = message::response_to(req, 415, None);
                resp.headers.push(Header::Other(
                    "Accept".into(),
                    "application/dtmf-relay, application/dtmf".into(),
                ));
                self.respond(tx, resp);
                return;
            }
        }
        // Only the caller's leg exists here.
        let ok = match req.method {
            Method::Info => message::response_to(req, 200, None),
            _ => self.ok_to_caller_refresh(req),
        };
        self.respond(tx, ok);
    }

    /// The callee puts the caller on hold (re-INVITE `sendonly`/`inactive`) or takes it
    /// off: instead of relaying silence, the caller hears music on hold from us. Returns
    /// `Some` when the re-INVITE was answered here.
    fn agent_hold(&mut self, tx: TxId, req: &Request) -> Option<Option<End>> {
        use crate::media::sdp::Direction;
        let (sd, info) = sdp::parse(&req.body).ok()?;
        let hold = matches!(info.direction, Direction::SendOnly | Direction::Inactive);
        match (hold, self.media.held()) {
            (true, false) => {
                self.park_caller_on_music()?;
                info!("the agent put the caller on hold: music on hold");
                self.publish(NewEvent::new("call.held").agent(self.rec.target.as_deref()));
            }
            (false, true) => {
                self.b_remote = info.rtp;
                self.take_caller_off_hold();
                info!("the agent took the caller off hold");
                self.publish(NewEvent::new("call.resumed").agent(self.rec.target.as_deref()));
            }
            _ => return None,
        }
        if let Some(d) = self.b_dialog.as_mut() {
            d.refresh_target(&req.headers);
        }
        // Answer the agent ourselves, with the direction that mirrors its offer.
        let answer = sdp::flip_direction(&sd);
        let body = self.render_sdp(Side::B, &answer);
        let mut ok = message::response_to(req, 200, None);
        message::set_body(
            &mut ok.headers,
            &mut ok.body,
            "application/sdp",
            body.into_bytes(),
        );
        let contact = self
            .b_dialog
            .as_ref()
            .map(|d| d.local_contact.clone())
            .unwrap_or_default();
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{contact}>"
            ))));
        self.respond(tx, ok);
        Some(None)
    }

    /// Re-originates an in-dialog request on the other leg, SDP rewritten for it.
    pub(super) fn relay_request(&mut self, from: Side, server_tx: TxId, req: Request) {
        let to = other(from);
        let mut body = None;
        if !req.body.is_empty() {
            let is_sdp = message::content_type(&as_msg(&req)).is_some_and(|c| c.contains("sdp"));
            if is_sdp {
                match sdp::parse(&req.body) {
                    Ok((sd, info)) => {
                        if let (true, Some(addr)) = (self.media.bridged(), info.rtp) {
                            self.media(MediaCmd::SetRemote { side: from, addr });
                        }
                        self.note_rekey(from, &info);
                        if self.media.bridged() {
                            // On hold, neither side owes us RTP.
                            use crate::media::sdp::Direction;
                            let talking =
                                matches!(info.direction, Direction::SendRecv | Direction::RecvOnly);
                            self.media(MediaCmd::Watch {
                                side: Side::A,
                                on: talking,
                            });
                            self.media(MediaCmd::Watch {
                                side: Side::B,
                                on: talking,
                            });
                        }
                        body = Some((
                            "application/sdp".to_string(),
                            self.render_sdp(to, &sd).into_bytes(),
                        ));
                        // A later answer from the callee is narrowed to what the caller
                        // offered last.
                        if from == Side::A {
                            self.a_offer = info;
                        }
                    }
                    Err(e) => {
                        self.respond(server_tx, message::response_to(&req, 488, None));
                        warn!(error = %e, "unusable SDP in an in-dialog request");
                        return;
                    }
                }
            } else {
                let ct = message::content_type(&as_msg(&req))
                    .unwrap_or_else(|| "application/octet-stream".into());
                body = Some((ct, req.body.clone()));
            }
        }
        let Some(dialog) = self.dialog_mut(to) else {
            return;
        };
        let mut out = dialog.request(req.method);
        let cseq = dialog.local_cseq;
        if let Some((ct, b)) = body {
            message::set_body(&mut out.headers, &mut out.body, &ct, b);
        }
        let peer = dialog.destination();
        let tx = self.send(out, peer);
        self.relayed.insert(
            tx,
            Relayed {
                from,
                server_tx,
                method: req.method,
                req,
                cseq,
            },
        );
    }

    pub(super) fn on_relayed_response(
        &mut self,
        tx: TxId,
        r: Relayed,
        resp: Response,
    ) -> Option<End> {
        let code = resp.status_code.code();
        if code < 200 {
            self.relayed.insert(tx, r); // wait for the final answer
            return None;
        }
        let answered_leg = other(r.from);
        let mut out = message::response_to(&r.req, code, None);
        if r.from == Side::A && (200..300).contains(&code) && r.method != Method::Info {
            out.headers.extend(self.session_headers());
        }
        // The agent's re-INVITE or UPDATE, answered by the caller, refreshed the caller's
        // session too (RFC 4028 §10).
        let refreshed = matches!(r.method, Method::Invite | Method::Update);
        if answered_leg == Side::A && (200..300).contains(&code) && refreshed {
            self.arm_session_timer();
        }
        if r.method == Method::Invite && (200..300).contains(&code) {
            if let Some(d) = self.dialog_mut(answered_leg) {
                let ack = d.ack(r.cseq);
                let peer = d.destination();
                self.ack(ack.clone(), peer);
                self.reinvite_acks.insert(tx, (ack, peer));
            }
        }
        if (200..300).contains(&code) && !resp.body.is_empty() {
            if let Ok((sd, info)) = sdp::parse(&resp.body) {
                if let (true, Some(addr)) = (self.media.bridged(), info.rtp) {
                    self.media(MediaCmd::SetRemote {
                        side: answered_leg,
                        addr,
                    });
                }
                self.note_rekey(answered_leg, &info);
                let body = self.render_sdp(r.from, &sd);
                message::set_body(
                    &mut out.headers,
                    &mut out.body,
                    "application/sdp",
                    body.into_bytes(),
                );
            } else {
                let ct =
                    message::content_type(&SipMessage::Response(resp.clone())).unwrap_or_default();
                message::set_body(&mut out.headers, &mut out.body, &ct, resp.body.clone());
            }
        }
        if (200..300).contains(&code) {
            let contact = match r.from {
                Side::A => self.a_contact.clone(),
                Side::B => self
                    .b_dialog
                    .as_ref()
                    .map(|d| d.local_contact.clone())
                    .unwrap_or_default(),
            };
            out.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{contact}>"
                ))));
        }
        self.respond(r.server_tx, out);
        None
    }
}
