//! Headless Chromium driven over WebDriver (a chromedriver of our own on loopback), for
//! the console's end-to-end tests. Blocking calls over an async client, like the rest of
//! the harness.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{alloc_ports, require_tool};

fn wait_tcp(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One browser test at a time: Chromium, a server and its phones together are a lot for
/// two cores, and these tests time what the page shows.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn; hold it for the whole test.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
}

impl Browser {
    /// A fresh headless Chromium at 1280×800.
    pub fn start() -> Browser {
        let chromium = require_tool("chromium", "chromium");
        let chromedriver = require_tool("chromedriver", "chromium-driver");
        let port = alloc_ports(1);
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        assert!(
            wait_tcp(port, Duration::from_secs(10)),
            "chromedriver did not listen on {port}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", "--no-first-run", "--disable-extensions"],
            }),
        );
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a WebDriver session");
        Browser {
            rt,
            client: Some(client),
            driver,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// The element matching `css`, once it is there.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Types into the element matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        self.rt
            .block_on(async { self.element(css).await.send_keys(text).await })
            .unwrap();
    }

    /// Clicks the element matching `css`. Live pages redraw their tables on events, so an
    /// element found may be replaced before the click lands: then it is found again.
    pub fn click(&self, css: &str) {
        for attempt in 1.. {
            match self
                .rt
                .block_on(async { self.element(css).await.click().await })
            {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && attempt < 10 => {}
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// The text of the element matching `css`, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        self.rt.block_on(async {
            let e = self.c().find(Locator::Css(css)).await.ok()?;
            e.text().await.ok()
        })
    }

    /// Polls until the element's text satisfies `done`; the moment it did.
    pub fn wait_text(&self, css: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Instant {
        let end = Instant::now() + timeout;
        loop {
            if let Some(t) = self.text(css) {
                if done(&t) {
                    return Instant::now();
                }
            }
            assert!(
                Instant::now() < end,
                "{css} never became as expected; it is {:?} on {}",
                self.text(css),
                self.url()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn execute(&self, script: &str) -> Value {
        self.rt.block_on(self.c().execute(script, vec![])).unwrap()
    }

    /// Runs an async script (it calls its last argument with the result).
    pub fn execute_async(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute_async(script, vec![]))
            .unwrap()
    }

    /// Runs axe-core (from tests/browser/node_modules) on the page; the violations of
    /// impact serious or critical.
    pub fn serious_accessibility_violations(&self) -> Vec<Value> {
        let axe = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/node_modules/axe-core/axe.min.js"
        );
        let source = std::fs::read_to_string(axe).unwrap_or_else(|_| {
            panic!(
                "{axe} is missing; run scripts/setup-and-test.sh (npm ci --prefix tests/browser)"
            )
        });
        self.execute(&source);
        let result = self
            .rt
            .block_on(self.c().execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))), e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
                vec![],
            ))
            .unwrap();
        result
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .cloned()
            .collect()
    }

    /// A PNG of the window.
    pub fn screenshot(&self, path: &std::path::Path) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A TCP relay in front of the server whose connections the test can cut (every open
/// connection closed, new ones refused) and restore: a network drop for the browser.
pub struct CutProxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CutProxy {
    pub fn start(target: u16) -> CutProxy {
        use std::sync::atomic::Ordering;
        let port = alloc_ports(1);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { port, cut, open }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
