//! A supervisor joining a call from the control plane: Switchboard rings the
//! supervisor's own phone, and once it answers hands its media to the agent's bridge in
//! the mode asked for (listen, whisper, barge), as `*1`/`*2`/`*3` + extension would.
//! The supervisor leaves by hanging up; the agent's call ending hangs it up.

use std::sync::Arc;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Response};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, Instrument};

use super::{as_msg, CallEvent, CallKey, Shared, SwitchHandle};
use crate::events::NewEvent;
use crate::media::codec::Codec;
use crate::media::mixer::Mode;
use crate::media::relay::SupervisorLeg;
use crate::media::sdp::{self, LegSdp};
use crate::media::taps::LegFormat;
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, host_str};
use crate::sip::registrar::Binding;
use crate::store::{now_ms, CallRecord, Disposition, HangupBy};

/// What we offer the supervisor's phone: every codec the mixer speaks, and keys.
/// (Its address is replaced by ours when rendered; 0.0.0.0 would read as hold.)
const OFFER: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 9 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
a=sendrecv\r\n";

pub struct Join {
    pub supervisor: String,
    /// The agent whose call is joined.
    pub agent: String,
    /// The agent's call, for the events.
    pub agent_call: String,
    pub mode: Mode,
    /// Who asked (`api:NAME`).
    pub by: String,
}

/// The mode a supervisor's SIP INFO key asks for: 4 listen, 5 whisper, 6 barge.
pub fn mode_key(req: &rsip::Request) -> Option<Mode> {
    if req.method != Method::Info {
        return None;
    }
    let ct = message::content_type(&as_msg(req)).unwrap_or_default();
    match crate::media::dtmf::parse_sip_info(&ct, &req.body)
        .ok()?
        .key
        .as_char()
    {
        '4' => Some(Mode::Listen),
        '5' => Some(Mode::Whisper),
        '6' => Some(Mode::Barge),
        _ => None,
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Listen => "listen",
        Mode::Whisper => "whisper",
        Mode::Barge => "barge",
    }
}

/// Rings the supervisor's phones (the first registered one) and runs the call in its
/// own task. Err when there is no phone to ring.
pub async fn start(shared: Arc<Shared>, sw: SwitchHandle, join: Join) -> Result<String, String> {
    let phones = sw.lookup(&join.supervisor).await;
    let Some(phone) = phones.into_iter().next() else {
        return Err(format!(
            "supervisor {} has no registered phone",
            join.supervisor
        ));
    };
    let uuid = crate::call::uuid_like();
    let Some((key, events)) = sw.open(&uuid).await else {
        return Err("the switch is not running".into());
    };
    let span = info_span!("call", id = %uuid, supervisor = %join.supervisor);
    let ringing = format!("ringing {}'s phone", join.supervisor);
    tokio::spawn(run(shared, sw, key, uuid, events, phone, join).instrument(span));
    Ok(ringing)
}

async fn run(
    shared: Arc<Shared>,
    sw: SwitchHandle,
    key: CallKey,
    uuid: String,
    mut events: mpsc::UnboundedReceiver<CallEvent>,
    phone: Binding,
    join: Join,
) {
    let mut rec = CallRecord {
        call_uuid: uuid.clone(),
        from_user: "switchboard".into(),
        dialed: join.supervisor.clone(),
        source_kind: "api",
        caller_user: Some(join.supervisor.clone()),
        target: Some(join.agent.clone()),
        arrived_ms: now_ms(),
        ..Default::default()
    };
    let (end, disposition, code) =
        match talk(&shared, &sw, key, &mut rec, &mut events, phone, &join).await {
            Ok(by) => (by, Disposition::Answered, 200),
            Err((code, why)) => {
                rec.reason = Some(why);
                let d = if code == 487 || code == 408 || code == 480 {
                    Disposition::NoAnswer
                } else {
                    Disposition::Failed
                };
                (HangupBy::Switchboard, d, code)
            }
        };
    rec.ended_ms = now_ms();
    rec.hangup_by = Some(end);
    rec.disposition = Some(disposition);
    rec.final_code = code;
    // Written off this task; a supervisor's join is announced below, not as call.ended.
    shared.records.submit_quiet(rec);
    shared.events.publish(
        NewEvent::new("call.supervisor")
            .call(&join.agent_call)
            .agent(Some(&join.agent))
            .data(
                serde_json::json!({ "supervisor": join.supervisor, "mode": "left", "by": join.by }),
            ),
    );
    sw.ended(key);
}

/// Rings, joins and waits for the end: who hung up, or the final code and why not.
async fn talk(
    shared: &Arc<Shared>,
    sw: &SwitchHandle,
    key: CallKey,
    rec: &mut CallRecord,
    events: &mut mpsc::UnboundedReceiver<CallEvent>,
    phone: Binding,
    join: &Join,
) -> Result<HangupBy, (u16, String)> {
    let ports = shared
        .ports
        .allocate()
        .map_err(|_| (503, "no RTP ports left".to_string()))?;
    let adv = shared.config.advertise;
    let call_id = format!("{}@switchboard", message::random_token(20));
    rec.a_call_id = call_id.clone();
    let peer = phone.target;
    let uri = rsip::Uri::try_from(phone.contact.as_str())
        .or_else(|_| rsip::Uri::try_from(format!("sip:{}@{}", join.supervisor, peer.addr).as_str()))
        .map_err(|_| (400, format!("cannot dial {}'s contact", join.supervisor)))?;
    let mut headers = rsip::Headers::default();
    headers.push(Header::From(rsip::headers::From::new(format!(
        "\"{} {}\" <sip:supervise@{}>;tag={}",
        mode_name(join.mode),
        join.agent,
        host_str(adv),
        message::new_tag()
    ))));
    headers.push(Header::To(rsip::headers::To::new(format!(
        "<sip:{}@{}>",
        join.supervisor,
        host_str(adv)
    ))));
    headers.push(Header::CallId(rsip::headers::CallId::new(call_id.clone())));
    headers.push(Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    headers.push(Header::Contact(rsip::headers::Contact::new(format!(
        "<{}>",
        shared.contact(peer.transport)
    ))));
    headers.push(Header::Other(
        "X-Switchboard-Call".into(),
        join.agent_call.clone(),
    ));
    let (template, _) = sdp::parse(OFFER.as_bytes()).map_err(|e| (500, e.to_string()))?;
    let body = LegSdp::new().render(&template, adv, ports.port());
    let invite = message::invite_with_sdp(uri, headers, body);
    sw.bind_call_id(key, call_id);
    let tx = sw.send(key, invite.clone(), peer);
    info!(agent = %join.agent, mode = mode_name(join.mode), "ringing the supervisor");
    let ring_for = Duration::from_secs(shared.config.ring_timeout_secs);
    let deadline = tokio::time::Instant::now() + ring_for;
    let answer: Response = loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                sw.cancel(tx);
                return Err((480, format!("{} did not answer", join.supervisor)));
            }
        };
        match ev {
            Some(CallEvent::Response { resp, .. }) if resp.status_code.code() >= 300 => {
                let code = resp.status_code.code();
                return Err((code, format!("{}'s phone answered {code}", join.supervisor)));
            }
            Some(CallEvent::Response { resp, .. }) if resp.status_code.code() >= 200 => {
                break *resp
            }
            Some(CallEvent::Timeout { .. }) => {
                return Err((408, "the supervisor's phone never answered".into()))
            }
            Some(CallEvent::Shutdown) | None => {
                sw.cancel(tx);
                return Err((503, "server shutting down".into()));
            }
            Some(CallEvent::Api { reply, .. }) => {
                let _ = reply.send(Err("a supervisor's call takes no requests".into()));
            }
            Some(_) => {}
        }
    };
    let contact = shared.contact(peer.transport);
    let mut dialog = Dialog::from_response(&invite, &answer, peer, contact);
    sw.send_ack(dialog.ack(1), peer);
    rec.answered_ms = Some(now_ms());
    let hang_up = |dialog: &mut Dialog| {
        let bye = dialog.request(Method::Bye);
        let dest = dialog.destination();
        let sw = sw.clone();
        async move {
            sw.send(key, bye, dest);
        }
    };
    let info = sdp::parse(&answer.body).ok().map(|(_, i)| i);
    let codec = info
        .as_ref()
        .and_then(|i| i.codecs.iter().find_map(|pt| Codec::from_payload_type(*pt)));
    let (Some(info), Some(codec)) = (info, codec) else {
        hang_up(&mut dialog).await;
        return Err((
            488,
            "the supervisor's phone answered with no codec we speak".into(),
        ));
    };
    let (attached, mut detached) = oneshot::channel();
    let leg = SupervisorLeg {
        ports,
        remote: info.rtp,
        format: LegFormat {
            codec,
            event_pt: info.telephone_event,
        },
        mode: join.mode,
        attached,
    };
    let relay = match sw.supervise(&join.agent, leg).await {
        Ok(relay) => relay,
        Err(_) => {
            hang_up(&mut dialog).await;
            return Err((200, format!("{} is not on a call any more", join.agent)));
        }
    };
    rec.bridged_ms = Some(now_ms());
    rec.reason = Some(format!(
        "{} {} ({})",
        match join.mode {
            Mode::Listen => "listened to",
            Mode::Whisper => "whispered to",
            Mode::Barge => "barged in on",
        },
        join.agent,
        join.by
    ));
    shared.events.publish(
        NewEvent::new("call.supervisor")
            .call(&join.agent_call)
            .agent(Some(&join.agent))
            .data(serde_json::json!({
                "supervisor": join.supervisor,
                "mode": mode_name(join.mode),
                "by": join.by,
            })),
    );
    loop {
        tokio::select! {
            _ = &mut detached => {
                hang_up(&mut dialog).await;
                return Ok(HangupBy::Switchboard);
            }
            ev = events.recv() => match ev {
                Some(CallEvent::Request { tx, req, .. }) if req.method == Method::Bye => {
                    sw.respond(tx, message::response_to(&req, 200, None));
                    relay.unsupervise();
                    return Ok(HangupBy::Callee);
                }
                Some(CallEvent::Request { tx, req, .. }) => {
                    // Keys 4, 5, 6 by SIP INFO switch modes, as on a dialled-in join.
                    if let Some(mode) = mode_key(&req) {
                        relay.supervisor_mode(mode);
                    }
                    sw.respond(tx, message::response_to(&req, 200, None));
                }
                Some(CallEvent::Api { reply, .. }) => {
                    let _ = reply.send(Err("a supervisor's call takes no requests".into()));
                }
                Some(CallEvent::Shutdown) | None => {
                    relay.unsupervise();
                    hang_up(&mut dialog).await;
                    return Ok(HangupBy::Switchboard);
                }
                Some(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_names_our_address_and_port_and_every_codec() {
        let (template, _) = sdp::parse(OFFER.as_bytes()).unwrap();
        let body = LegSdp::new().render(&template, "127.0.0.1".parse().unwrap(), 21000);
        let (_, info) = sdp::parse(body.as_bytes()).unwrap();
        assert_eq!(info.rtp, Some("127.0.0.1:21000".parse().unwrap()));
        assert_eq!(info.telephone_event, Some(101));
        assert!(body.contains("a=sendrecv"), "{body}");
    }
}
