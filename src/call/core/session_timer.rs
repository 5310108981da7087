//! Session timers on the caller's leg (RFC 4028, `sip::session_timer`): the 2xx says who
//! refreshes; Switchboard refreshes by UPDATE when it is its turn, and hangs up when the
//! caller's refreshes stop or ours are answered 408/481. (The switch refused the INVITEs
//! whose terms we cannot meet, with 420 or 422, before there was a call.)

use super::*;
use crate::sip::session_timer::{self as st, Due, SessionTimer};

/// The caller leg's session timer: what was agreed, when to act next, and our
/// refreshing UPDATE in flight.
#[derive(Debug, Default)]
pub(super) struct Timer {
    agreed: Option<SessionTimer>,
    due: Option<(Instant, Due)>,
    refresh_tx: Option<TxId>,
}

impl Timer {
    pub(super) fn new(agreed: Option<SessionTimer>) -> Timer {
        Timer {
            agreed,
            ..Default::default()
        }
    }

    pub(super) fn due_at(&self) -> Option<Instant> {
        self.due.map(|(at, _)| at)
    }

    pub(super) fn is_refresh(&self, tx: TxId) -> bool {
        self.refresh_tx == Some(tx)
    }

    /// That leg's session is over (the caller left for a callback).
    pub(super) fn stop(&mut self) {
        *self = Timer::default();
    }
}

impl CallCore {
    /// Session-timer headers for a 2xx to the caller.
    pub(super) fn session_headers(&self) -> Vec<Header> {
        let mut h = vec![Header::Other("Supported".into(), "timer".into())];
        if let Some(t) = &self.timer.agreed {
            h.extend(t.headers());
        }
        h
    }

    /// The 200 to the caller's re-INVITE or UPDATE answered here: our Contact (both are
    /// target refreshes), the session's terms, and for a re-INVITE the SDP we answered
    /// with (the media stays as it is).
    pub(super) fn ok_to_caller_refresh(&self, req: &Request) -> Response {
        let mut ok = message::response_to(req, 200, None);
        if let (Method::Invite, Some(body)) = (&req.method, self.a_sdp.last_body()) {
            message::set_body(
                &mut ok.headers,
                &mut ok.body,
                "application/sdp",
                body.as_bytes().to_vec(),
            );
        }
        ok.headers.extend(self.session_headers());
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{}>",
                self.a_contact
            ))));
        ok
    }

    /// (Re)starts the timer: the session was answered or refreshed just now.
    pub(super) fn arm_session_timer(&mut self) {
        let now = self.now.at;
        self.timer.due = self.timer.agreed.map(|t| t.next(now));
    }

    /// A re-INVITE or UPDATE from the caller refreshes the session, on its terms.
    pub(super) fn on_caller_refresh(&mut self, req: &Request) {
        if let Ok(t) = st::negotiate(req, self.config.session_min_se) {
            self.timer.agreed = t;
        }
        self.arm_session_timer();
    }

    /// The timer went off: refresh, or give up on the caller.
    pub(super) fn on_session_timer(&mut self) -> Option<End> {
        let (_, due) = self.timer.due.take()?;
        match due {
            Due::Expired => {
                warn!("the caller stopped refreshing the session; hanging up");
                Some(self.session_end("session timer expired: the caller stopped refreshing"))
            }
            Due::Refresh => {
                let dialog = self.a_dialog.as_mut()?;
                let mut update = dialog.request(Method::Update);
                let to = dialog.destination();
                update
                    .headers
                    .push(Header::Other("Supported".into(), "timer".into()));
                if let Some(t) = &self.timer.agreed {
                    update.headers.extend(t.refresh_headers());
                }
                self.timer.refresh_tx = Some(self.send(update, to));
                self.arm_session_timer();
                None
            }
        }
    }

    /// Our refreshing UPDATE was answered (or timed out, as 408).
    pub(super) fn on_refresh_answer(&mut self, code: u16) -> Option<End> {
        self.timer.refresh_tx = None;
        if code != 408 && code != 481 {
            return None; // refreshed, or refused by a caller that is still there
        }
        warn!(
            code,
            "the caller did not take our session refresh; hanging up"
        );
        Some(self.session_end("session refresh failed: the caller is gone"))
    }

    /// Hangs up on the session's end: both legs, or a supervisor's call (leaving the
    /// agent's bridge).
    fn session_end(&mut self, why: &str) -> End {
        if matches!(self.phase, Phase::Supervising | Phase::Announcing) {
            return self.supervision_over(Some(why.to_string()));
        }
        self.hangup_both(None);
        End {
            by: HangupBy::Switchboard,
            disposition: if self.a_answered || self.phase == Phase::Answered {
                Disposition::Answered
            } else {
                Disposition::Failed
            },
            code: 200,
            reason: Some(why.to_string()),
        }
    }
}
