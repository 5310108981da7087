//! Where the caller's media is, and the moves between: our own endpoint (the IVR, an
//! announcement), the bridge to the callee, music on hold. The call task owns the ports
//! and the media tasks; the core says which arrangement it wants ([`MediaCmd`]) and
//! hears back what the bridge reports.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;
use crate::media::mixer::SampleRate;
use crate::media::srtp::SrtpSession;

/// How to speak to the caller from our own endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerLeg {
    /// Where the caller's SDP says to send its media.
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub telephone_event: Option<u8>,
}

/// A bridge to start between the caller's ports (wherever they are now) and the
/// callee's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub a_remote: Option<SocketAddr>,
    pub b_remote: Option<SocketAddr>,
    /// Set when the bridge carries a conversation at once (back from hold, a callback).
    pub conversation: Option<Conversation>,
}

/// What the bridge needs once it carries a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The two legs' formats, when both are known (the bridge transcodes if they differ).
    pub formats: Option<(LegFormat, LegFormat)>,
    pub forward_dtmf: bool,
    /// Hand the bridge the recording parked while the caller was elsewhere.
    pub take_parked_recording: bool,
    pub recording_paused: bool,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MediaCmd {
    /// Answer the caller with our own endpoint (watched for the media timeout).
    AnswerHere {
        leg: CallerLeg,
        watch: Option<Duration>,
    },
    Bridge(BridgeSpec),
    SetRemote {
        side: Side,
        addr: SocketAddr,
    },
    /// Whether a leg owes us RTP (the media timeout).
    Watch {
        side: Side,
        on: bool,
    },
    /// The bridge carries a conversation from here on.
    Converse(Conversation),
    /// Record the conversation into this file.
    Record {
        path: PathBuf,
        rate: SampleRate,
    },
    PauseRecording(bool),
    /// Finish the recording now ([`Input::RecordingFinished`] follows).
    StopRecording,
    /// Take the caller from the bridge and play it music on hold; the callee's ports
    /// and the recording wait. [`Input::MediaStats`] follows.
    Park {
        leg: CallerLeg,
    },
    /// Give the flow a new endpoint on the caller's ports (from the bridge, whose
    /// recording is finished, or from the music).
    ToIvr {
        leg: CallerLeg,
        watch: Option<Duration>,
    },
    /// Keep the caller's ports, unused, for a callback.
    KeepForCallback,
    /// The callee leg's SRTP (on the bridge, or on its waiting ports). Boxed: a
    /// session's cipher state is kilobytes, and every command is as big as the biggest.
    CalleeSrtp(Option<Box<SrtpSession>>),
    /// A new key a leg's re-INVITE named.
    Rekey {
        side: Side,
        key: Box<crate::media::srtp::MasterKey>,
    },
    /// The caller's ports go plain (a callback's new leg).
    CallerPlain,
    SupervisorMode(Mode),
    /// Play a prompt on our endpoint ([`Input::AnnouncementDone`] when it ends).
    Play {
        prompt: String,
    },
    /// Hand the caller's ports to `agent`'s bridge as a supervisor's leg.
    JoinAgent {
        agent: String,
        mode: Mode,
        leg: CallerLeg,
    },
    /// The joined supervisor's mode, on the agent's bridge.
    SupervisedMode(Mode),
    /// Leave the agent's bridge.
    Unsupervise,
    /// Stop everything; [`Input::Finished`] follows.
    Finish,
}

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingOutcome {
    Written {
        ms: i64,
    },
    /// It could not be finished; `made` says whether its file exists.
    Failed {
        made: bool,
    },
}

/// The core's view of the caller's media.
#[derive(Debug, Default)]
pub(super) struct MediaPlan {
    bridged: bool,
    held: bool,
}

impl MediaPlan {
    pub(super) fn bridged(&self) -> bool {
        self.bridged
    }

    pub(super) fn held(&self) -> bool {
        self.held
    }
}

impl CallCore {
    /// Bridges the caller's ports with the callee's, each side aimed at the address its
    /// SDP named (symmetric RTP corrects it on the first packet).
    pub(super) fn start_bridge(&mut self, conversation: bool) {
        let spec = BridgeSpec {
            a_remote: self.a_offer.rtp,
            b_remote: self.b_remote,
            conversation: conversation.then(|| self.conversation()),
        };
        self.media = MediaPlan {
            bridged: true,
            held: false,
        };
        self.media(MediaCmd::Bridge(spec));
    }

    fn conversation(&self) -> Conversation {
        Conversation {
            formats: self.a_format().zip(self.b_format),
            forward_dtmf: self.config.forward_dtmf,
            take_parked_recording: !self.recording.stopped,
            recording_paused: self.recording.paused,
        }
    }

    /// The bridge carries a conversation from here on: formats, the parked recording,
    /// and both legs watched for the media timeout.
    pub(super) fn configure_bridge(&mut self) {
        if self.media.bridged {
            let c = self.conversation();
            self.media(MediaCmd::Converse(c));
        }
    }

    /// The caller's negotiated format: what Switchboard answered it with, else what the
    /// callee's answer chose (the caller's offer went to the callee unchanged).
    pub(super) fn a_format(&self) -> Option<LegFormat> {
        let codec = self.a_codec.or(self.b_format.map(|f| f.codec))?;
        Some(LegFormat {
            codec,
            event_pt: self.a_offer.telephone_event,
        })
    }

    pub(super) fn caller_leg(&self, codec: Codec) -> CallerLeg {
        CallerLeg {
            remote: self.a_offer.rtp,
            codec,
            telephone_event: self.a_offer.telephone_event,
        }
    }

    /// Answers the caller with our own media endpoint (IVR, feature codes): one voice
    /// codec, the first of the caller's offer that we speak (PCMU, PCMA or G.722; the
    /// caller's order decides, not ours), and telephone-event if offered, so a callee
    /// reached later is offered exactly what the caller speaks.
    pub(super) fn answer_here(&mut self) -> Result<Codec, End> {
        let codec = self
            .a_offer
            .codecs
            .iter()
            .find_map(|pt| Codec::from_payload_type(*pt));
        let Some(codec) = codec else {
            self.respond_a(488, None);
            return Err(End::failed(
                488,
                "the caller offers no codec the IVR can play",
            ));
        };
        let te = self.a_offer.telephone_event;
        let keep = SdpInfo {
            codecs: std::iter::once(codec.payload_type()).chain(te).collect(),
            ..self.a_offer.clone()
        };
        let narrowed = sdp::restrict_answer(&self.a_offer_sd, &keep);
        let (narrowed, info) = narrowed.map_err(|e| End::failed(488, &e.to_string()))?;
        self.a_offer_sd = narrowed;
        self.a_offer = info;
        let offer = self.a_offer_sd.clone();
        let body = self.render_sdp(Side::A, &offer);
        self.answer_caller(body);
        self.a_answered = true;
        self.phase = Phase::Ivr;
        let leg = self.caller_leg(codec);
        self.media(MediaCmd::AnswerHere {
            leg,
            watch: self.config.media_timeout,
        });
        self.a_codec = Some(codec);
        Ok(codec)
    }

    /// Takes the caller's ports back from the bridge and plays music on hold into them;
    /// the callee's ports and the recording wait. Returns the caller's codec.
    pub(super) fn park_caller_on_music(&mut self) -> Option<Codec> {
        if !self.media.bridged {
            return None;
        }
        let codec = self.a_codec.or_else(|| {
            self.a_offer
                .codecs
                .iter()
                .find_map(|pt| Codec::from_payload_type(*pt))
        })?;
        let leg = self.caller_leg(codec);
        self.media(MediaCmd::Park { leg });
        self.media = MediaPlan {
            bridged: false,
            held: true,
        };
        Some(codec)
    }

    /// The caller comes off music on hold back into a conversation.
    pub(super) fn take_caller_off_hold(&mut self) {
        self.start_bridge(true);
    }

    /// The callee answered a call the IVR had answered: the caller's ports (with the
    /// flow's endpoint, or with the music of a transfer) are bridged with the callee's.
    pub(super) fn bridge_after_ivr(&mut self) {
        self.start_bridge(false);
    }

    /// Takes the caller's ports back from the bridge (or the music) and gives the flow a
    /// new endpoint on them, in the codec the caller was answered with.
    pub(super) fn resume_flow_media(&mut self) -> bool {
        let Some(codec) = self.a_codec else {
            return false;
        };
        if !self.media.bridged && !self.media.held {
            return false;
        }
        let leg = self.caller_leg(codec);
        self.media(MediaCmd::ToIvr {
            leg,
            watch: self.config.media_timeout,
        });
        self.media = MediaPlan::default();
        true
    }

    pub(super) fn on_relay_event(&mut self, ev: RelayEvent) -> Option<End> {
        match ev {
            RelayEvent::Key(Side::B, key) => {
                self.on_agent_key(key.as_char());
                None
            }
            RelayEvent::Key(Side::A, _) => None,
            RelayEvent::SupervisorMode(mode) => {
                info!(?mode, "the supervisor switched mode");
                None
            }
            RelayEvent::RecordingFailed(why) => {
                // The file could not be made or written (a full disk): the call goes on,
                // unrecorded from here, and the record keeps what was written.
                warn!(%why, "the recording stopped");
                self.recording.stopped = true;
                self.publish(
                    NewEvent::new("call.recording")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "state": "failed", "why": why })),
                );
                None
            }
            RelayEvent::MediaTimeout(side) if self.phase == Phase::Answered => {
                let secs = self.config.media_timeout.map_or(0, |t| t.as_secs());
                let who = if side == Side::A { "caller" } else { "callee" };
                warn!(who, secs, "no RTP: hanging up");
                self.hangup_both(None);
                Some(End::switchboard(
                    Disposition::Answered,
                    &format!("media timeout: no RTP from the {who} for {secs} s"),
                ))
            }
            RelayEvent::MediaTimeout(_) => None,
        }
    }
}
