//! The caller in an ACD queue: offers ring an agent's phones, withdrawn offers stop
//! them, an answer connects, and the caller leaves by overflow, transfer or hang-up.
//! Transfers away from an agent (REFER, the API) live here too: the agent is let go and
//! the caller waits on music for the next target.

use super::*;
use crate::acd::CallEnd;

/// What the call tells the ACD (the call task adds the call's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcdCmd {
    Enqueue {
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
    },
    Declined {
        agent: String,
    },
    Answered {
        agent: String,
    },
    /// The caller hung up to be called back; it keeps its place.
    CallbackRequested,
    /// A connected call ended (or left its agent).
    Ended(CallEnd),
    /// A waiting caller left.
    Abandoned,
}

/// A call in an ACD queue, as the call sees it.
#[derive(Debug, Default)]
pub(super) struct Queued {
    /// The agents whose phones ring for this call now (several with ring-all).
    pub(super) offered: Vec<String>,
    /// An agent answered: the legs are bridged.
    pub(super) connected: bool,
    /// The caller hung up to be called back; the call keeps its place.
    pub(super) callback: bool,
}

impl CallCore {
    /// Whether the call is a conversation with an agent (what transfers and hold need).
    pub(super) fn talking_to_agent(&self) -> bool {
        self.phase == Phase::Answered && self.b_dialog.is_some()
    }

    /// What the ACD decided for this queued call.
    pub(super) fn on_acd(&mut self, msg: AcdMsg) -> Option<End> {
        // A late message for a queue the call has left is dropped.
        self.queue.as_ref()?;
        let connected = self.queue.as_ref().is_some_and(|q| q.connected);
        match msg {
            // A bridged caller is not offered again (a late message from the router).
            AcdMsg::Offer { .. } | AcdMsg::CancelOffer { .. } | AcdMsg::Announce { .. }
                if connected =>
            {
                None
            }
            AcdMsg::Offer { agent } => {
                self.push(Command::Lookup {
                    extension: agent.clone(),
                    purpose: Lookup::Offer { agent },
                });
                None
            }
            AcdMsg::CancelOffer { agent } => {
                if let Some(q) = &mut self.queue {
                    q.offered.retain(|a| a != &agent);
                }
                self.cancel_agent_forks(Some(&agent));
                if self.queue.as_ref().is_some_and(|q| q.offered.is_empty()) {
                    self.phase = Phase::Ivr;
                }
                None
            }
            AcdMsg::Announce {
                position,
                wait_minutes,
            } => {
                // Only to a caller who is waiting, not while an agent's phone rings.
                let waiting = self.queue.as_ref().is_some_and(|q| q.offered.is_empty());
                if waiting && self.ivr.is_some() {
                    info!(position, ?wait_minutes, "position announced");
                    self.ivr_cmd(IvrCmd::Announce {
                        position,
                        wait_minutes,
                    });
                }
                None
            }
            AcdMsg::DialCaller { agent } => self.dial_caller_back(&agent),
            AcdMsg::Overflow { reason } => {
                info!(%reason, "left the queue unanswered");
                // Phones still ringing for this call must stop: a late answer must not
                // bridge a caller who has moved on in the flow.
                self.cancel_agent_forks(None);
                self.queue = None;
                self.phase = Phase::Ivr;
                // A caller transferred into the queue has no flow step to fall back on.
                if self.transferred_to_queue || self.ivr.is_none() {
                    self.hangup_both(Some(Side::A));
                    return Some(End::switchboard(
                        Disposition::Answered,
                        &format!("the queue gave up on the transferred caller: {reason}"),
                    ));
                }
                self.queue_failed_to_flow(reason);
                None
            }
        }
    }

    /// The ACD's offer, once the agent's phones are known.
    pub(super) fn offer_to(&mut self, agent: String, phones: Vec<Binding>) -> Option<End> {
        let q = self.queue.as_mut()?;
        if q.connected {
            return None; // answered by another agent while the switch looked up
        }
        if phones.is_empty() {
            // Nobody registered for that agent: next agent, please.
            self.acd(AcdCmd::Declined { agent });
            return None;
        }
        q.offered.push(agent.clone());
        self.rec.target = Some(agent.clone());
        // Phones of earlier, finished offers are forgotten; ringing ones stay (ring-all
        // offers several agents at once).
        self.forks.retain(|f| f.final_code.is_none());
        self.phase = Phase::Ringing;
        self.ringing_agent = Some(agent);
        for b in &phones {
            self.start_fork(b);
        }
        self.ringing_agent = None;
        None
    }

    /// Puts the caller in `queue` (the IVR's data goes along in `call.queued`); the
    /// ACD's answers come as [`Input::Acd`].
    pub(super) fn join_queue(&mut self, queue: String, skills: Vec<(String, u8)>, priority: i32) {
        info!(%queue, priority, "queued");
        let variables = self
            .ivr
            .as_ref()
            .map(|i| i.call_data.clone())
            .unwrap_or_default();
        let skill_map: std::collections::BTreeMap<_, _> = skills.iter().cloned().collect();
        self.publish(NewEvent::new("call.queued").queue(Some(&queue)).data(
            serde_json::json!({ "priority": priority, "skills": skill_map, "variables": variables }),
        ));
        self.acd(AcdCmd::Enqueue {
            queue: queue.clone(),
            skills,
            priority,
        });
        self.rec.queue = Some(queue);
        self.queue = Some(Queued::default());
    }

    /// Cancels the ringing phones of one offered agent, or of every agent.
    pub(super) fn cancel_agent_forks(&mut self, agent: Option<&str>) {
        let ringing: Vec<TxId> = self
            .forks
            .iter()
            .filter(|f| {
                agent.is_none_or(|a| f.agent.as_deref() == Some(a)) && f.final_code.is_none()
            })
            .map(|f| f.tx)
            .collect();
        for tx in ringing {
            self.cancel(tx);
        }
    }

    /// The agent transfers the caller (blind, RFC 3515 REFER): once the target's phones
    /// are known, the agent is told it worked and leaves, the caller hears music while
    /// the new target rings, and the call goes on with the target as callee. Only
    /// extensions of this server are targets.
    pub(super) fn blind_transfer(&mut self, tx: TxId, req: Request) -> Option<End> {
        let refer_to = message::other_header(&req.headers, "Refer-To").map(str::to_string);
        let target = refer_to
            .as_deref()
            .and_then(|v| v.split_once("sip:"))
            .and_then(|(_, rest)| rest.split(['@', '>', ';']).next())
            .map(str::to_string)
            .filter(|t| !t.is_empty());
        let Some(target) = target else {
            self.respond(tx, message::response_to(&req, 400, None));
            return None;
        };
        self.push(Command::Lookup {
            extension: target.clone(),
            purpose: Lookup::Refer {
                tx,
                req: Box::new(req),
                target,
            },
        });
        None
    }

    pub(super) fn refer_to(
        &mut self,
        tx: TxId,
        req: &Request,
        target: String,
        phones: Vec<Binding>,
    ) -> Option<End> {
        if phones.is_empty() || !self.talking_to_agent() {
            self.respond(tx, message::response_to(req, 404, None));
            return None;
        }
        self.respond(tx, message::response_to(req, 202, None));
        // Tell the agent the transfer is done (we take it from here), then hang it up.
        if let Some(d) = self.b_dialog.as_mut() {
            let mut notify = d.request(Method::Notify);
            notify
                .headers
                .push(Header::Other("Event".into(), "refer".into()));
            notify.headers.push(Header::Other(
                "Subscription-State".into(),
                "terminated;reason=noresource".into(),
            ));
            message::set_body(
                &mut notify.headers,
                &mut notify.body,
                "message/sipfrag;version=2.0",
                b"SIP/2.0 200 OK".to_vec(),
            );
            let peer = d.destination();
            self.send(notify, peer);
        }
        self.transfer_to(target, phones)
    }

    /// Sends the caller on to `target` (whose phones are `phones`): the agent is released,
    /// the caller hears music while the target rings.
    pub(super) fn transfer_to(&mut self, target: String, phones: Vec<Binding>) -> Option<End> {
        let from_agent = self.release_agent(&target)?;
        self.rec.reason = Some(format!("transferred by {from_agent} to {target}"));
        self.rec.target = Some(target);
        self.ring(&phones);
        None
    }

    /// Sends the caller from its agent into `queue`: music while it waits, then the agent
    /// the queue picks. Should the queue give up on it, the call ends there.
    pub(super) fn transfer_to_queue(&mut self, queue: String) -> Option<End> {
        let from_agent = self.release_agent(&format!("queue:{queue}"))?;
        self.rec.reason = Some(format!("transferred by {from_agent} to queue {queue}"));
        self.join_queue(queue, Vec::new(), 0);
        self.transferred_to_queue = true;
        self.phase = Phase::Ivr;
        None
    }

    /// Lets the agent go (its leg hung up, its queue told) and parks the caller on music,
    /// offered from now on exactly the codec it speaks. The agent it was talking to.
    fn release_agent(&mut self, to: &str) -> Option<String> {
        // Only a caller on the bridge (or on hold music) can wait for the next target;
        // a callback's agent waiting for the dialled caller is not let go.
        if !self.media.bridged() && !self.media.held() {
            warn!(%to, "no transfer: the caller is not in the conversation yet");
            return None;
        }
        self.ring_deadline = None;
        let from_agent = self.rec.target.clone().unwrap_or_default();
        info!(from = %from_agent, %to, "blind transfer");
        self.publish(
            NewEvent::new("call.transferred")
                .agent(Some(&from_agent))
                .data(serde_json::json!({ "from": from_agent, "to": to })),
        );
        if self.queue.take().is_some() {
            self.acd(AcdCmd::Ended(CallEnd::Transferred));
        }
        if let Some(extension) = self.talking.take() {
            self.push(Command::OnCall {
                extension,
                on: false,
            });
        }
        self.hangup_both(Some(Side::B));
        // The caller waits on music while the new target rings (already there if the
        // agent held it).
        let codec = if self.media.held() {
            self.a_codec.or_else(|| {
                self.a_offer
                    .codecs
                    .iter()
                    .find_map(|pt| Codec::from_payload_type(*pt))
            })?
        } else {
            self.park_caller_on_music()?
        };
        // The new callee is offered exactly the codec the caller speaks.
        let keep = SdpInfo {
            codecs: std::iter::once(codec.payload_type())
                .chain(self.a_offer.telephone_event)
                .collect(),
            ..self.a_offer.clone()
        };
        if let Ok((narrowed, info)) = sdp::restrict_answer(&self.a_offer_sd, &keep) {
            self.a_offer_sd = narrowed;
            self.a_offer = info;
        }
        self.b_dialog = None;
        self.b_remote = None;
        self.a_answered = true;
        Some(from_agent)
    }

    /// The agent hung up a queue call: the caller goes back to the flow (post-call survey)
    /// on a new endpoint made from the bridge's ports.
    pub(super) fn back_to_flow_after_agent(&mut self) -> Option<End> {
        if self.queue.take().is_some() {
            self.acd(AcdCmd::Ended(CallEnd::Agent));
        }
        // Nothing of the agent's leg carries over.
        if let Some(extension) = self.talking.take() {
            self.push(Command::OnCall {
                extension,
                on: false,
            });
        }
        self.b_dialog = None;
        self.b_remote = None;
        self.ring_deadline = None;
        self.forks.clear();
        self.relayed.clear();
        self.reinvite_acks.clear();
        self.phase = Phase::Ivr;
        if self.ivr.is_none() {
            // A call that reached the queue by a transfer has no flow to go back to.
            self.hangup_both(Some(Side::A));
            return Some(End {
                by: HangupBy::Callee,
                disposition: Disposition::Answered,
                code: 200,
                reason: self.rec.reason.clone(),
            });
        }
        if !self.resume_flow_media() {
            // No way to speak to the caller again: end the call rather than leave it mute.
            self.hangup_both(Some(Side::A));
            return Some(End {
                by: HangupBy::Callee,
                disposition: Disposition::Answered,
                code: 200,
                reason: Some("the agent hung up; the caller's media could not be resumed".into()),
            });
        }
        self.feed_ivr(crate::ivr::Event::AgentHungUp);
        None
    }
}
