//! The control plane's part of the configuration: where the API listens, who may use it
//! (tokens, stored only as their SHA-256), the agents' not-ready reasons and the
//! disposition codes agents close calls with.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    /// address:port of the HTTP listener; no `api:` section means no API.
    listen: Spanned<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    /// How long a browser login lasts.
    #[serde(default)]
    session_secs: Option<u64>,
    /// Failed logins from one address before it is locked out, and for how long.
    #[serde(default)]
    lockout_after: Option<u32>,
    #[serde(default)]
    lockout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    name: Spanned<String>,
    role: Spanned<String>,
    /// SHA-256 of the token, in hex (`switchboard token` makes a pair).
    sha256: Spanned<String>,
    /// For role `agent`: the extension the token acts as.
    #[serde(default)]
    extension: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    name: Spanned<String>,
    /// http://host:port/path the signed POSTs go to.
    url: Spanned<String>,
    /// The shared secret the receiver checks signatures with.
    secret: Spanned<String>,
    /// Which to send (default: all of call.offered, call.answered, call.ended,
    /// call.disposition, voicemail.left).
    #[serde(default)]
    events: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisposition {
    code: Spanned<String>,
    resolved: bool,
    #[serde(default)]
    label: Option<String>,
}

/// What an API user may do, from most to least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiRole {
    /// Read-only: lists, records, the event stream.
    Reporting,
    /// Acts only as its own extension.
    Agent,
    /// Every agent, every call, listen / whisper / barge.
    Supervisor,
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Reporting => "reporting",
            ApiRole::Agent => "agent",
            ApiRole::Supervisor => "supervisor",
            ApiRole::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    pub sha256: [u8; 32],
    pub extension: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    pub session_secs: u64,
    pub lockout_after: u32,
    pub lockout_secs: u64,
}

/// The webhook kinds a CRM can be sent.
pub const WEBHOOK_EVENTS: [&str; 5] = [
    "call.offered",
    "call.answered",
    "call.ended",
    "call.disposition",
    "voicemail.left",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispositionCode {
    pub code: String,
    pub resolved: bool,
    pub label: String,
}

/// What an agent may give as a not-ready reason when none are configured.
pub const DEFAULT_PAUSE_REASONS: [&str; 4] = ["break", "lunch", "training", "meeting"];

/// The disposition codes when none are configured.
pub fn default_dispositions() -> Vec<DispositionCode> {
    [
        ("resolved", true, "Resolved"),
        ("follow_up", false, "Follow-up needed"),
        ("escalated", false, "Escalated"),
    ]
    .into_iter()
    .map(|(c, r, l)| DispositionCode {
        code: c.into(),
        resolved: r,
        label: l.into(),
    })
    .collect()
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Validator {
    pub(super) fn api(
        &mut self,
        raw: Option<&RawApi>,
        extensions: &std::collections::HashSet<String>,
    ) -> Option<ApiConfig> {
        let raw = raw?;
        let listen = match raw.listen.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    &raw.listen,
                    format!(
                        "api.listen \"{}\" is not an address:port (e.g. 127.0.0.1:8080)",
                        raw.listen.value
                    ),
                );
                return None;
            }
        };
        let mut tokens = Vec::new();
        let mut names = std::collections::HashSet::new();
        for t in &raw.tokens {
            if !names.insert(t.name.value.clone()) {
                self.error(
                    &t.name,
                    format!("API token \"{}\" is defined twice", t.name.value),
                );
            }
            let role = match t.role.value.as_str() {
                "admin" => ApiRole::Admin,
                "supervisor" => ApiRole::Supervisor,
                "agent" => ApiRole::Agent,
                "reporting" => ApiRole::Reporting,
                other => {
                    self.error(
                        &t.role,
                        format!(
                            "API role \"{other}\" is unknown; use admin, supervisor, agent or reporting"
                        ),
                    );
                    continue;
                }
            };
            let mut sha256 = [0u8; 32];
            if hex::decode_to_slice(t.sha256.value.trim(), &mut sha256).is_err() {
                self.error(
                    &t.sha256,
                    format!(
                        "the sha256 of API token \"{}\" must be 64 hex digits: the SHA-256 of the \
                         token, not the token itself (`switchboard token` makes both)",
                        t.name.value
                    ),
                );
                continue;
            }
            let extension = t.extension.as_ref().map(|e| e.value.clone());
            match (&t.extension, role) {
                (None, ApiRole::Agent) => {
                    self.error(
                        &t.role,
                        format!(
                            "API token \"{}\" has role agent but no extension to act as",
                            t.name.value
                        ),
                    );
                    continue;
                }
                (Some(e), _) if !extensions.contains(&e.value) => {
                    self.error(
                        e,
                        format!(
                            "API token \"{}\" acts as extension \"{}\", which is not a configured user",
                            t.name.value, e.value
                        ),
                    );
                    continue;
                }
                _ => {}
            }
            tokens.push(ApiToken {
                name: t.name.value.clone(),
                role,
                sha256,
                extension,
            });
        }
        Some(ApiConfig {
            listen,
            tokens,
            session_secs: raw.session_secs.unwrap_or(8 * 3600),
            lockout_after: raw.lockout_after.unwrap_or(5),
            lockout_secs: raw.lockout_secs.unwrap_or(300),
        })
    }

    pub(super) fn webhooks(&mut self, raw: &[RawWebhook]) -> Vec<Webhook> {
        let mut out: Vec<Webhook> = Vec::new();
        for w in raw {
            if !is_code(&w.name.value) || out.iter().any(|o| o.name == w.name.value) {
                self.error(
                    &w.name,
                    format!(
                        "webhook name \"{}\" must be unique and lower-case letters, digits, _ or -",
                        w.name.value
                    ),
                );
                continue;
            }
            if !w.url.value.starts_with("http://") && !w.url.value.starts_with("https://") {
                self.error(
                    &w.url,
                    format!(
                        "webhook url \"{}\" must start with http:// or https://",
                        w.url.value
                    ),
                );
                continue;
            }
            if w.url.value.starts_with("https://") {
                self.error(
                    &w.url,
                    "https webhooks are not supported yet; use http:// to a local relay",
                );
                continue;
            }
            if w.secret.value.len() < 16 {
                self.error(&w.secret, "a webhook secret must be at least 16 characters (the receiver checks signatures with it)");
                continue;
            }
            let events = match &w.events {
                None => WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
                Some(list) => {
                    let mut events = Vec::new();
                    for e in list {
                        if WEBHOOK_EVENTS.contains(&e.value.as_str()) {
                            events.push(e.value.clone());
                        } else {
                            self.error(
                                e,
                                format!(
                                    "webhook event \"{}\" is unknown; use {}",
                                    e.value,
                                    WEBHOOK_EVENTS.join(", ")
                                ),
                            );
                        }
                    }
                    events
                }
            };
            out.push(Webhook {
                name: w.name.value.clone(),
                url: w.url.value.clone(),
                secret: w.secret.value.clone(),
                events,
            });
        }
        out
    }

    pub(super) fn dispositions(&mut self, raw: Option<&[RawDisposition]>) -> Vec<DispositionCode> {
        let Some(raw) = raw else {
            return default_dispositions();
        };
        let mut out: Vec<DispositionCode> = Vec::new();
        for d in raw {
            if !is_code(&d.code.value) {
                self.error(
                    &d.code,
                    format!(
                        "disposition code \"{}\" must be lower-case letters, digits, _ or - (e.g. follow_up)",
                        d.code.value
                    ),
                );
            } else if out.iter().any(|o| o.code == d.code.value) {
                self.error(
                    &d.code,
                    format!("disposition code \"{}\" is defined twice", d.code.value),
                );
            } else {
                out.push(DispositionCode {
                    code: d.code.value.clone(),
                    resolved: d.resolved,
                    label: d.label.clone().unwrap_or_else(|| d.code.value.clone()),
                });
            }
        }
        out
    }

    pub(super) fn pause_reasons(&mut self, raw: Option<&[Spanned<String>]>) -> Vec<String> {
        let Some(raw) = raw else {
            return DEFAULT_PAUSE_REASONS
                .iter()
                .map(|s| s.to_string())
                .collect();
        };
        let mut out = Vec::new();
        for r in raw {
            if !is_code(&r.value) {
                self.error(
                    r,
                    format!(
                        "not-ready reason \"{}\" must be lower-case letters, digits, _ or - (e.g. lunch)",
                        r.value
                    ),
                );
            } else if !out.contains(&r.value) {
                out.push(r.value.clone());
            }
        }
        out
    }
}
