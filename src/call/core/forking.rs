//! Ringing the callee: one INVITE per registered contact (a fork), provisional answers
//! relayed to the caller, the first 2xx taken and the others cancelled, and the most
//! telling failure when none answers (RFC 3261 §16.7).

use super::*;
use crate::ivr::interpreter::QueueResult;

impl CallCore {
    /// Rings every contact and arms the no-answer timer.
    pub(super) fn ring(&mut self, targets: &[Binding]) {
        info!(
            target_ext = self.rec.target.as_deref().unwrap_or(""),
            contacts = targets.len(),
            "ringing"
        );
        self.phase = Phase::Ringing;
        // A new ring (a transfer after an earlier one) starts with no old phones.
        self.forks.retain(|f| f.final_code.is_none());
        // Room for exactly these phones: a first push would reserve four forks, most
        // calls ring one.
        self.forks.reserve_exact(targets.len());
        for b in targets {
            self.start_fork(b);
        }
        let timeout = Duration::from_secs(self.config.ring_timeout_secs);
        self.ring_deadline = Some(self.now.at + timeout);
    }

    pub(super) fn start_fork(&mut self, b: &Binding) {
        let adv = host_str(self.advertise());
        let call_id = format!("{}@switchboard", message::random_token(20));
        let caller = if self.rec.from_user.is_empty() {
            "anonymous"
        } else {
            &self.rec.from_user
        };
        let display = self
            .a_invite
            .headers
            .iter()
            .find_map(|h| match h {
                // Only a name-addr (`"Name" <sip:…>`) has a display name.
                Header::From(f) => f.value().split_once('<').map(|(d, _)| d.trim().to_string()),
                _ => None,
            })
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d} "))
            .unwrap_or_default();
        let target = self.rec.target.clone().unwrap_or_default();
        let uri = rsip::Uri::try_from(b.contact.as_str()).unwrap_or_else(|_| {
            rsip::Uri::try_from(format!("sip:{target}@{}", b.source.addr).as_str())
                .unwrap_or_default()
        });
        let mut headers = rsip::Headers::default();
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{display}<sip:{caller}@{adv}>;tag={}",
            message::new_tag()
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<sip:{target}@{adv}>"
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id.clone())));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        // Through the proxy the phone registered by (its Path, RFC 3327).
        for hop in &b.path {
            headers.push(Header::Route(rsip::headers::Route::new(hop.clone())));
        }
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{}>",
            self.contacts.get(b.source.transport)
        ))));
        headers.push(Header::Allow(rsip::headers::Allow::new(
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
        )));
        headers.push(Header::Other(
            "X-Switchboard-Call".into(),
            self.rec.call_uuid.clone(),
        ));
        // Screen pop: what the IVR learned travels to the agent's phone (secure values
        // never reach here: the interpreter leaves them out of its call data).
        if let Some(ivr) = &self.ivr {
            for (name, value) in screen_pop_headers(&ivr.call_data) {
                headers.push(Header::Other(name, value));
            }
        }
        // A caller Switchboard answered is on our media: the callee may pick any codec
        // we carry (the caller's first), and the bridge transcodes if it differs.
        let offer = if self.a_answered {
            sdp::offer_all_codecs(&self.a_offer_sd)
        } else {
            self.a_offer_sd.clone()
        };
        let crypto = self.crypto_for_callee(b);
        self.b_sdp.crypto = crypto.clone();
        let body = self.b_sdp.render(&offer, self.advertise(), self.b_port);
        let req = message::invite_with_sdp(uri, headers, body);
        self.push(Command::BindCallId(call_id.clone()));
        if self.rec.b_call_id.is_none() {
            self.rec.b_call_id = Some(call_id);
        }
        let tx = self.send(req.clone(), b.target);
        self.forks.push(Fork {
            tx,
            invite: req,
            peer: b.target,
            final_code: None,
            agent: self.ringing_agent.clone(),
            crypto,
        });
    }

    /// Answers the caller's INVITE with `sdp`: 200, the caller's dialog, the answer time.
    pub(super) fn answer_caller(&mut self, sdp: String) {
        self.respond_a(200, Some(sdp));
        self.arm_session_timer();
        self.a_dialog = Some(Dialog::from_request(
            &self.a_invite,
            &self.a_tag,
            self.a_peer,
            self.a_contact.clone(),
        ));
        self.rec.answered_ms = Some(self.now.wall_ms);
    }

    pub(super) fn respond_a(&mut self, code: u16, body: Option<String>) {
        let mut resp = message::response_to(&self.a_invite, code, Some(&self.a_tag));
        if (200..300).contains(&code) {
            resp.headers.extend(self.session_headers());
        }
        if code < 300 {
            resp.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{}>",
                    self.a_contact
                ))));
        }
        if let Some(b) = body {
            message::set_body(
                &mut resp.headers,
                &mut resp.body,
                "application/sdp",
                b.into_bytes(),
            );
        }
        let tx = self.a_tx;
        self.respond(tx, resp);
    }

    /// Ends the caller's side: `code` to its INVITE, or a BYE if Switchboard answered it
    /// already (the IVR, a transfer from it). The final code the caller got.
    fn refuse_or_hang_up(&mut self, code: u16) -> u16 {
        if self.a_answered {
            self.hangup_both(Some(Side::A));
            200
        } else {
            self.respond_a(code, None);
            code
        }
    }

    pub(super) fn cancel_forks(&mut self, except: Option<TxId>) {
        let ringing: Vec<TxId> = self
            .forks
            .iter()
            .filter(|f| f.final_code.is_none() && Some(f.tx) != except)
            .map(|f| f.tx)
            .collect();
        for tx in ringing {
            self.cancel(tx);
        }
    }

    /// Stops ringing and ends the call: the caller gets `code`, or a BYE if the IVR
    /// answered it already (its final response was our 200).
    pub(super) fn give_up(&mut self, code: u16, d: Disposition, why: &str) -> End {
        self.cancel_forks(None);
        let code = self.refuse_or_hang_up(code);
        End {
            by: HangupBy::Switchboard,
            disposition: d,
            code,
            reason: Some(why.into()),
        }
    }

    pub(super) fn on_response(&mut self, tx: TxId, resp: Response) -> Option<End> {
        if self.timer.is_refresh(tx) {
            let code = resp.status_code.code();
            return if code >= 200 {
                self.on_refresh_answer(code)
            } else {
                None
            };
        }
        if self.callback.is_dial(tx) {
            return self.on_callback_response(resp);
        }
        if let Some(r) = self.relayed.remove(&tx) {
            return self.on_relayed_response(tx, r, resp);
        }
        if let Some((ack, peer)) = self.reinvite_acks.get(&tx) {
            if resp.status_code.code() / 100 == 2 {
                let (ack, peer) = (ack.clone(), *peer);
                self.ack(ack, peer);
            }
            return None;
        }
        let code = resp.status_code.code();
        let fork_idx = self.forks.iter().position(|f| f.tx == tx)?;
        match code {
            100 => None,
            101..=199 => {
                if self.phase != Phase::Ringing {
                    return None;
                }
                if self.rec.ringing_ms.is_none() {
                    self.rec.ringing_ms = Some(self.now.wall_ms);
                }
                if self.a_answered {
                    return None; // the caller is in the call already; nothing to relay
                }
                // Early media (183 with SDP) is relayed; plain ringing becomes 180.
                let early = (!resp.body.is_empty())
                    .then(|| self.answer_sdp_for_a(Some(fork_idx), &resp.body).ok())
                    .flatten();
                match early {
                    Some(body) => self.respond_a(183, Some(body)),
                    None => self.respond_a(180, None),
                }
                None
            }
            200..=299 => self.on_fork_answered(fork_idx, resp),
            _ => self.on_fork_final(tx, code),
        }
    }

    /// The callee's SDP answer, narrowed to the caller's offer and rendered for leg A.
    pub(super) fn answer_sdp_for_a(
        &mut self,
        fork: Option<usize>,
        body: &[u8],
    ) -> Result<String, sdp::SdpError> {
        let narrowed = self.accept_b_answer(fork, body)?;
        Ok(self.render_sdp(Side::A, &narrowed))
    }

    /// Checks the callee's SDP answer against what the caller can receive and points the
    /// bridge's B side at it; returns the answer narrowed to the caller's codecs.
    pub(super) fn accept_b_answer(
        &mut self,
        fork: Option<usize>,
        body: &[u8],
    ) -> Result<rtc_sdp::SessionDescription, sdp::SdpError> {
        let (sd, info) = sdp::parse(body)?;
        self.accept_b_crypto(fork, &info)?;
        let offered = if self.a_answered {
            sdp::all_codecs(&self.a_offer)
        } else {
            self.a_offer.clone()
        };
        let (narrowed, kept) = sdp::restrict_answer(&sd, &offered)?;
        self.b_format = kept
            .codecs
            .iter()
            .find_map(|pt| Codec::from_payload_type(*pt))
            .map(|codec| LegFormat {
                codec,
                event_pt: kept.telephone_event,
            });
        self.b_remote = info.rtp;
        if let (true, Some(addr)) = (self.media.bridged(), info.rtp) {
            self.media(MediaCmd::SetRemote {
                side: Side::B,
                addr,
            });
        }
        Ok(narrowed)
    }

    /// Hangs up a phone that answered when it was no longer wanted.
    fn bye_to_late(&mut self, mut late: Dialog, peer: Peer) {
        let bye = late.request(Method::Bye);
        self.send(bye, peer);
    }

    pub(super) fn on_fork_answered(&mut self, idx: usize, resp: Response) -> Option<End> {
        let fork_tx = self.forks[idx].tx;
        let peer = self.forks[idx].peer;
        let contact = self.contacts.get(peer.transport);
        let dialog = Dialog::from_response(&self.forks[idx].invite, &resp, peer, contact);
        let ack = dialog.ack(1);
        self.ack(ack, peer);
        // A queue call: only an answer from an agent still on offer is taken; any other
        // (a withdrawn offer, the call already bridged or back in the flow) is hung up.
        let stale_offer = self.queue.as_ref().is_none_or(|q| {
            q.connected
                || self.forks[idx]
                    .agent
                    .as_ref()
                    .is_none_or(|a| !q.offered.contains(a))
        });
        if self.forks[idx].agent.is_some() && stale_offer && self.phase != Phase::Answered {
            self.forks[idx].final_code = Some(resp.status_code.code());
            self.bye_to_late(dialog, peer);
            return None;
        }
        if self.phase == Phase::Answered {
            let mine = self.b_dialog.as_ref().map(|d| d.id.call_id.clone());
            if mine.as_deref() != Some(dialog.id.call_id.as_str()) {
                // A second fork answered too late: acknowledge it and hang it up.
                self.bye_to_late(dialog, peer);
            }
            return None;
        }
        self.forks[idx].final_code = Some(resp.status_code.code());
        let answer = if self.a_answered {
            // The caller is already answered (by the IVR): nothing to send it, only the
            // callee's media to accept.
            self.accept_b_answer(Some(idx), &resp.body).map(|_| None)
        } else {
            self.answer_sdp_for_a(Some(idx), &resp.body).map(Some)
        };
        let body = match answer {
            // A callback's agent waits on the line while the caller is dialled.
            Ok(None) if self.queue.as_ref().is_some_and(|q| q.callback) => {
                self.cancel_forks(Some(fork_tx));
                self.ring_deadline = None;
                self.rec.b_call_id = Some(dialog.id.call_id.clone());
                self.b_dialog = Some(dialog);
                self.phase = Phase::Answered;
                let agent = self.forks[idx].agent.clone()?;
                info!(%agent, "the callback's agent answered; dialling the caller");
                self.queue.as_mut()?.offered.clear();
                self.acd(AcdCmd::Answered { agent });
                return None;
            }
            Ok(b) => b,
            Err(e) if self.queue.is_some() => {
                // One agent's phone answered with media we cannot use: hang that phone
                // up; the ACD moves on and the caller keeps waiting.
                warn!(error = %e, "an agent's answer cannot be used");
                self.bye_to_late(dialog, peer);
                let agent = self.forks[idx].agent.clone();
                if let (Some(q), Some(agent)) = (&mut self.queue, agent) {
                    if q.offered.contains(&agent) {
                        q.offered.retain(|a| a != &agent);
                        self.acd(AcdCmd::Declined { agent });
                    }
                }
                return None;
            }
            Err(e) if self.a_answered => {
                warn!(error = %e, "the callee's answer cannot be used");
                self.bye_to_late(dialog, peer);
                self.cancel_forks(None);
                self.hangup_both(Some(Side::A));
                return Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 200,
                    reason: Some(e.to_string()),
                });
            }
            Err(e) => {
                warn!(error = %e, "the callee's answer cannot be used");
                self.bye_to_late(dialog, peer);
                self.cancel_forks(None);
                self.respond_a(488, None);
                return Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 488,
                    reason: Some(e.to_string()),
                });
            }
        };
        self.cancel_forks(Some(fork_tx));
        // Answered: this ring's no-answer timer must not fire on a later phase.
        self.ring_deadline = None;
        self.rec.b_call_id = Some(dialog.id.call_id.clone());
        self.b_dialog = Some(dialog);
        self.phase = Phase::Answered;
        match body {
            Some(body) => self.answer_caller(body),
            None => self.bridge_after_ivr(),
        }
        self.rec.bridged_ms = Some(self.now.wall_ms);
        info!("answered");
        let answered_by = self.forks[idx].agent.clone();
        self.publish(
            NewEvent::new("call.answered")
                .queue(self.rec.queue.as_deref())
                .agent(self.rec.target.as_deref())
                .data(serde_json::json!({ "by": self.rec.target })),
        );
        self.on_bridged(answered_by.clone());
        let agent = match (self.queue.as_mut(), answered_by) {
            (Some(q), Some(agent)) => {
                q.connected = true;
                // Other offered agents (ring-all) are cancelled with their phones above.
                q.offered.clear();
                self.acd(AcdCmd::Answered {
                    agent: agent.clone(),
                });
                Some(agent)
            }
            _ => None,
        };
        if let (Some(agent), Some(_)) = (agent, &self.ivr) {
            self.feed_ivr(crate::ivr::Event::QueueResult(QueueResult::Connected {
                agent,
            }));
        }
        None
    }

    pub(super) fn on_fork_final(&mut self, tx: TxId, code: u16) -> Option<End> {
        let fork = self.forks.iter_mut().find(|f| f.tx == tx)?;
        fork.final_code = Some(code);
        let agent = fork.agent.clone();
        if let Some(q) = &mut self.queue {
            if q.connected {
                return None; // the other phones of the agent who answered
            }
            // An offered agent's phones all failed: the ACD decides what next (the caller
            // keeps its place). A withdrawn offer is no longer in `offered`.
            if let Some(agent) = agent {
                let all_failed = self
                    .forks
                    .iter()
                    .filter(|f| f.agent.as_deref() == Some(agent.as_str()))
                    .all(|f| f.final_code.is_some());
                if all_failed && q.offered.contains(&agent) {
                    q.offered.retain(|a| a != &agent);
                    self.out.push_back(Command::Acd(AcdCmd::Declined { agent }));
                }
            }
            if self.queue.as_ref().is_some_and(|q| q.offered.is_empty()) {
                self.phase = Phase::Ivr;
            }
            return None;
        }
        if self.phase != Phase::Ringing || self.forks.iter().any(|f| f.final_code.is_none()) {
            return None;
        }
        // Every fork failed: tell the caller the most telling answer (RFC 3261 §16.7:
        // 6xx first, then busy, then the lowest class).
        let codes: Vec<u16> = self.forks.iter().filter_map(|f| f.final_code).collect();
        let best = codes
            .iter()
            .copied()
            .find(|c| *c >= 600)
            .or_else(|| codes.iter().copied().find(|c| *c == 486))
            .or_else(|| codes.iter().copied().min())
            .unwrap_or(480);
        let (code, d) = match best {
            486 | 600 => (486, Disposition::Busy),
            603 | 403 => (603, Disposition::Declined),
            // A redirect (forwarding, DND) is not followed: the extension is unavailable.
            300..=399 | 408 | 480 | 404 => (480, Disposition::Unavailable),
            401 | 407 => (403, Disposition::Failed),
            c => (c, Disposition::Failed),
        };
        let code = self.refuse_or_hang_up(code);
        Some(End {
            by: HangupBy::Callee,
            disposition: d,
            code,
            reason: Some(format!("callee answered {best}")),
        })
    }
}

/// `X-Switchboard-<variable>: value` headers for the IVR's variables: names reduced to
/// header token characters, values to one line, and a bound on how much is sent.
pub(super) fn screen_pop_headers(
    data: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    const MAX_HEADERS: usize = 32;
    const MAX_VALUE: usize = 256;
    data.iter()
        .filter_map(|(name, value)| {
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_VALUE)
                .collect();
            (!name.is_empty()).then(|| (format!("X-Switchboard-{name}"), value))
        })
        .take(MAX_HEADERS)
        .collect()
}
