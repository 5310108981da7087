//! The control plane from the outside: a plain HTTP client with the test tokens, as an
//! integration or the web console would use it.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

/// The test tokens (their SHA-256 goes into the configuration), by role.
pub const ADMIN: &str = "sb_test_admin_token";
pub const SUPERVISOR: &str = "sb_test_supervisor_token";
pub const REPORTING: &str = "sb_test_reporting_token";
/// Acts as agent 2001 / 2002.
pub const AGENT_2001: &str = "sb_test_agent_2001_token";
pub const AGENT_2002: &str = "sb_test_agent_2002_token";

fn sha256_hex(s: &str) -> String {
    // sha256sum is in coreutils, everywhere the tests run.
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The `api:` section for a test server listening on `port`.
pub fn api_yaml(port: u16) -> String {
    let mut y = format!(
        "api:\n  listen: \"127.0.0.1:{port}\"\n  lockout_after: 4\n  lockout_secs: 30\n  tokens:\n"
    );
    for (name, role, token, ext) in [
        ("ops", "admin", ADMIN, None),
        ("floor", "supervisor", SUPERVISOR, None),
        ("wallboard", "reporting", REPORTING, None),
        ("agent-2001", "agent", AGENT_2001, Some("2001")),
        ("agent-2002", "agent", AGENT_2002, Some("2002")),
    ] {
        y.push_str(&format!(
            "    - {{ name: {name}, role: {role}, sha256: \"{}\"{} }}\n",
            sha256_hex(token),
            ext.map(|e| format!(", extension: \"{e}\""))
                .unwrap_or_default()
        ));
    }
    y
}

/// One HTTP answer: status, headers we look at, and the body as JSON (Null if not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub set_cookie: Option<String>,
    pub body: Value,
    pub text: String,
}

pub struct Api {
    pub base: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        let port = server
            .api_port
            .expect("the server was started without `api: true`");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            // A fresh connection per request: a pooled one the server has just closed
            // (after a refusal that left a request body unread) fails as "Peer
            // disconnected" on reuse, which says nothing about the API.
            .max_idle_connections(0)
            .build()
            .new_agent();
        Api {
            base: format!("http://127.0.0.1:{port}"),
            agent,
        }
    }

    /// `method path` with an optional bearer token, extra headers and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let set_cookie = header("set-cookie");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            set_cookie,
            body,
            text,
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), &[], None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), &[], Some(&body))
    }

    /// GET that must answer 200; its JSON.
    pub fn ok(&self, path: &str, token: &str) -> Value {
        let r = self.get(path, token);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.body
    }

    /// Every stored event after `since`, following the pages.
    pub fn all_events(&self, token: &str, since: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = since;
        loop {
            let page = self.ok(
                &format!("/api/v1/events/log?since={since}&limit=1000"),
                token,
            );
            let events = page["events"].as_array().unwrap().clone();
            out.extend(events);
            match page["next"].as_u64() {
                Some(n) => since = n,
                None => return out,
            }
        }
    }

    /// Polls `path` until `done` holds for its JSON, or panics after `timeout`.
    pub fn wait_for(
        &self,
        path: &str,
        token: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.ok(path, token);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never became as expected: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of an unlabelled sample in a Prometheus exposition (`name value`).
pub fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{exposition}"))
}
