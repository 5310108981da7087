//! Supervisors: a supervisor's own call (`*1`/`*2`/`*3` + extension) handing its media to
//! the agent's bridge, and the agent's call taking it in.

use super::*;

impl Call {
    /// A supervisor asks to join: only a bridged conversation takes one.
    pub(super) fn on_supervise(
        &mut self,
        leg: SupervisorLeg,
        reply: tokio::sync::oneshot::Sender<Result<RelayHandle, SupervisorLeg>>,
    ) {
        match &self.relay {
            Some(relay) if self.phase == Phase::Answered && self.b_format.is_some() => {
                info!(mode = ?leg.mode, "a supervisor joins");
                relay.supervise(leg);
                let _ = reply.send(Ok(relay.clone()));
            }
            _ => {
                let _ = reply.send(Err(leg));
            }
        }
    }

    /// A supervisor's own call: answered here, its media handed to the agent's bridge.
    /// Keys 4, 5 and 6 (RTP events go to the bridge; SIP INFO comes here) switch among
    /// listen, whisper and barge. It ends when either the supervisor or the agent's call
    /// does.
    pub(super) async fn supervise(
        &mut self,
        a_ports: MediaPorts,
        agent: &str,
        mode: Mode,
        events: &mut mpsc::UnboundedReceiver<CallEvent>,
    ) -> End {
        let (endpoint, media, codec) = match self.answer_here(a_ports) {
            Ok(answered) => answered,
            Err(end) => return end,
        };
        let hang_up = End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Answered,
            code: 200,
            reason: None,
        };
        let Some(ports) = endpoint.release().await else {
            self.hangup_both(Some(Side::A)).await;
            return hang_up;
        };
        drop(media);
        let (attached, mut detached) = tokio::sync::oneshot::channel();
        let leg = SupervisorLeg {
            ports,
            remote: self.a_offer.rtp,
            format: LegFormat {
                codec,
                event_pt: self.a_offer.telephone_event,
            },
            mode,
            attached,
        };
        let relay = match self.sw.supervise(agent, leg).await {
            Ok(relay) => relay,
            Err(leg) => {
                info!(agent, "the agent is on no call");
                self.rec.reason = Some(format!("{agent} is not on a call"));
                let Some(leg) = leg else {
                    self.hangup_both(Some(Side::A)).await;
                    return hang_up;
                };
                let (speaker, media) = self.caller_endpoint(leg.ports, codec);
                return self
                    .play_then_hang_up(speaker, media, codec, "en/supervisor_no_call.wav", events)
                    .await;
            }
        };
        self.rec.reason = Some(format!(
            "{} {agent}",
            match mode {
                Mode::Listen => "listened to",
                Mode::Whisper => "whispered to",
                Mode::Barge => "barged in on",
            }
        ));
        loop {
            tokio::select! {
                _ = &mut detached => {
                    // The agent's call ended (or another supervisor took over).
                    self.hangup_both(Some(Side::A)).await;
                    return End {
                        reason: Some(format!("{agent}'s call ended")),
                        ..hang_up
                    };
                }
                ev = events.recv() => match ev {
                    Some(CallEvent::Request { tx, req, .. }) if req.method == Method::Bye => {
                        self.sw.respond(tx, message::response_to(&req, 200, None));
                        relay.unsupervise();
                        return End { by: HangupBy::Caller, reason: None, ..hang_up };
                    }
                    Some(CallEvent::Request { tx, req, .. }) => {
                        if let Some(mode) = crate::call::supervisor_call::mode_key(&req) {
                            relay.supervisor_mode(mode);
                        }
                        self.sw.respond(tx, message::response_to(&req, 200, None));
                    }
                    Some(CallEvent::Shutdown) | None => {
                        relay.unsupervise();
                        self.hangup_both(Some(Side::A)).await;
                        return hang_up;
                    }
                    Some(_) => {}
                },
            }
        }
    }
}
