//! The OpenAPI document against the running server: it validates as OpenAPI 3.1
//! (openapi-spec-validator), and a schema-driven client (schemathesis) that generates
//! requests from it — examples, edge cases, random and stateful sequences — finds no
//! server error, no undocumented status or content type, and no response that breaks
//! the document's own schema. Both tools come from PyPI into the repository's `.venv`
//! (the setup script makes it).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::api::{self, Api};
use common::*;

fn venv_tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run ./scripts/setup-and-test.sh, which makes .venv with \
         `pip install schemathesis openapi-spec-validator`",
        path.display()
    );
    path
}

#[test]
fn the_openapi_document_validates_and_a_schema_driven_client_finds_no_5xx_and_no_schema_break() {
    let validator = venv_tool("openapi-spec-validator");
    let schemathesis = venv_tool("schemathesis");
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, wrap_up_secs: 0, members: [\"2001\", \"2002\"] }"],
        ServerConfig {
            api: true,
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    // A finished call, so records, history and the queue log have something to show.
    Sipp::new("uac_queue_impatient.xml")
        .service("100")
        .run(&server)
        .assert_ok(&server, "a caller who gives up");
    server.wait_for_calls(1, Duration::from_secs(10));

    let doc = api.call("GET", "/api/v1/openapi.json", None, &[], None);
    let file = server.dir.path().join("openapi.json");
    std::fs::write(&file, &doc.text).unwrap();
    let out = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("{}/api/v1/openapi.json", api.base);
    let out = Command::new("timeout")
        .arg("240")
        .arg(&schemathesis)
        .args(["run", &url])
        .args(["-H", &format!("Authorization: Bearer {}", api::ADMIN)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        // The streams never end; they are tested by their own clients.
        .args(["--exclude-path-regex", "/events(/stream)?$"])
        .args([
            "--max-examples",
            "20",
            "--workers",
            "1",
            "--request-timeout",
            "5",
        ])
        .args(["--generation-database", "none", "--seed", "20261203"])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    // It did reach the operations (not one 401 wall).
    assert!(!report.contains("Authentication failed: 2"), "{report}");
}
