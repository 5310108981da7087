//! CRM webhooks: signed POSTs about calls (offered — the screen pop, answered, ended,
//! disposition set, voicemail left) to each configured endpoint.
//!
//! The outbox is the event log itself: each endpoint has a cursor in the store (the last
//! event it has been given), and its task walks the log from there, in order, sending
//! each event that makes a webhook and retrying with back-off until the endpoint answers
//! 2xx. Nothing is lost when the CRM is down or Switchboard restarts; an event may be
//! sent twice (a crash between the answer and the cursor's write), so every delivery
//! carries an id for the receiver to drop repeats. Calls never wait for any of this.
//!
//! Signature (like Stripe's): `Switchboard-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is
//! HMAC-SHA256 with the endpoint's secret over `"{t}.{body}"`; the receiver recomputes
//! it and refuses a `t` too far from its clock (a replay).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tracing::{info, warn};

use crate::config::Webhook;
use crate::events::{Event, EventLog};
use crate::store::{now_ms, Store};

type HmacSha256 = Hmac<Sha256>;

/// The signature header's value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length works");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts one delivery task per configured endpoint. In a cluster (`leading` given) the
/// log holds every node's events and each endpoint has one cursor: only the node that
/// leads delivers, and another takes over from the cursor when leadership moves.
pub fn start(
    hooks: &[Webhook],
    store: Store,
    events: EventLog,
    leading: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    for hook in hooks {
        tokio::spawn(deliver_loop(
            hook.clone(),
            store.clone(),
            events.clone(),
            http.clone(),
            leading.clone(),
        ));
    }
}

/// The webhooks one event makes: (kind, data).
async fn webhooks_of(store: &Store, e: &Event) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let Some(call) = e.call.as_deref() else {
        return Ok(Vec::new());
    };
    Ok(match e.kind.as_str() {
        "queue.offered" => {
            // The screen pop: who calls, what the IVR learned, and the caller's history.
            let earlier = store.events_of_call(call).await?;
            let field = |kind: &str, key: &str| {
                earlier
                    .iter()
                    .find(|x| x.kind == kind)
                    .map(|x| x.data[key].clone())
                    .unwrap_or(Value::Null)
            };
            let caller = field("call.arrived", "caller");
            let history = match caller.as_str() {
                Some(number) => {
                    let since = now_ms() - 7 * 86_400_000;
                    Some(store.caller_history(number, since, 7).await?)
                }
                None => None,
            };
            vec![(
                "call.offered",
                json!({
                    "agent": e.agent,
                    "queue": e.queue,
                    "caller": caller,
                    "dialed": field("call.arrived", "dialed"),
                    "variables": field("call.queued", "variables"),
                    "history": history,
                }),
            )]
        }
        "call.answered" => vec![(
            "call.answered",
            json!({ "agent": e.agent, "queue": e.queue }),
        )],
        "call.disposition" => vec![("call.disposition", e.data.clone())],
        "call.ended" => {
            let record = store.record(call).await?;
            let mut out = vec![("call.ended", json!({ "record": record }))];
            if let Some(file) = e.data["voicemail"].as_str() {
                out.push((
                    "voicemail.left",
                    json!({ "caller": e.data["caller"], "file": file }),
                ));
            }
            out
        }
        _ => Vec::new(),
    })
}

async fn deliver_loop(
    hook: Webhook,
    store: Store,
    events: EventLog,
    http: reqwest::Client,
    mut leading: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let mut live = events.subscribe();
    // Other nodes' events are not announced here: look for them every second.
    let idle = if leading.is_some() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    if let Some(l) = leading.as_mut() {
        if l.wait_for(|lead| *lead).await.is_err() {
            return;
        }
    }
    // A new endpoint starts from now; a known one from where it stopped.
    let mut cursor = loop {
        match store.webhook_cursor(&hook.name).await {
            Ok(Some(seq)) => break seq,
            Ok(None) => {
                let now = events.last_seq();
                if store.set_webhook_cursor(&hook.name, now).await.is_ok() {
                    break now;
                }
            }
            Err(e) => warn!(webhook = %hook.name, error = %e, "cannot read the webhook cursor"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    info!(webhook = %hook.name, url = %hook.url, from = cursor, "webhook delivery started");
    loop {
        if let Some(l) = leading.as_mut() {
            if !*l.borrow() {
                info!(webhook = %hook.name, "another node leads: it delivers the webhooks");
                if l.wait_for(|lead| *lead).await.is_err() {
                    return;
                }
                // Where the last leader stopped.
                match store.webhook_cursor(&hook.name).await {
                    Ok(Some(seq)) => cursor = seq,
                    Ok(None) => {}
                    Err(e) => {
                        warn!(webhook = %hook.name, error = %e, "cannot read the webhook cursor")
                    }
                }
            }
        }
        let batch = match events.since(cursor, 200).await {
            Ok(b) => b,
            Err(e) => {
                warn!(webhook = %hook.name, error = %e, "cannot read the event log");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Woken by the next event (or a lag, which means there are events).
            let _ = tokio::time::timeout(idle, live.recv()).await;
            continue;
        }
        for e in &batch {
            let hooks = loop {
                match webhooks_of(&store, e).await {
                    Ok(h) => break h,
                    Err(err) => {
                        warn!(webhook = %hook.name, error = %err, "cannot build a webhook; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            for (kind, data) in hooks {
                if !hook.events.iter().any(|k| k == kind) {
                    continue;
                }
                let body = json!({
                    "id": format!("{}.{kind}", e.seq),
                    "type": kind,
                    "seq": e.seq,
                    "at_ms": e.at_ms,
                    "call": e.call,
                    "data": data,
                })
                .to_string();
                send(&http, &hook, kind, &format!("{}.{kind}", e.seq), &body).await;
            }
            cursor = e.seq;
            // Written after every event that was sent, at least once per batch.
            while let Err(err) = store.set_webhook_cursor(&hook.name, cursor).await {
                warn!(webhook = %hook.name, error = %err, "cannot save the webhook cursor; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// POSTs until the endpoint answers 2xx: 1 s, 2 s, 4 s … at most 30 s apart.
async fn send(http: &reqwest::Client, hook: &Webhook, kind: &str, id: &str, body: &str) {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1u32;
    loop {
        let t = now_ms() / 1000;
        let result = http
            .post(&hook.url)
            .header("Content-Type", "application/json")
            .header("Switchboard-Event", kind)
            .header("Switchboard-Delivery", id)
            .header("Switchboard-Signature", signature(&hook.secret, t, body))
            .body(body.to_string())
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                warn!(webhook = %hook.name, id, attempt, status = r.status().as_u16(), "webhook refused; retrying")
            }
            Err(e) => {
                warn!(webhook = %hook.name, id, attempt, error = %e, "webhook not delivered; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Checked against: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret-s3cret-s3cret
        let sig = signature("s3cret-s3cret-s3cret", 1_700_000_000, r#"{"a":1}"#);
        let mut mac = HmacSha256::new_from_slice(b"s3cret-s3cret-s3cret").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
        assert_ne!(
            signature("other-secret-other", 1_700_000_000, r#"{"a":1}"#),
            sig
        );
        assert_ne!(
            signature("s3cret-s3cret-s3cret", 1_700_000_001, r#"{"a":1}"#),
            sig
        );
    }
}
