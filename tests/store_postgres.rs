//! The server with `store: postgres://…`: a real PostgreSQL server (started by the test),
//! a real call through SIPp, and the record, the events and the schema's migration found
//! in PostgreSQL, not in the data directory's SQLite file.

mod common;

use std::time::Duration;

use common::*;
use sqlx::Row;

/// disposition, hangup_by, target, final_code, a_rtp_in, b_rtp_in
type RecordRow = (String, Option<String>, Option<String>, i64, i64, i64);

#[test]
fn a_call_is_recorded_in_postgresql() {
    require_pcap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = postgres_database();
    // Its own database, whichever store the rest of the suite runs on.
    let server = Server::start_with(ServerConfig {
        extra_yaml: vec![format!("store: {url}")],
        sqlite_only: true,
        ..Default::default()
    });
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller_run = Sipp::new("uac_call.xml")
        .service("2001")
        .timeout_secs(45)
        .duration_ms(1_000)
        .run(&server);
    caller_run.assert_ok(&server, "trunk call to 2001");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "callee 2001");

    let (calls, events, migrations) = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        // The record is written as the call ends; give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let calls = loop {
            let rows = sqlx::query(
                "SELECT disposition, hangup_by, target, final_code, a_rtp_in, b_rtp_in FROM calls",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let calls: Vec<RecordRow> = calls
            .iter()
            .map(|r| {
                (
                    r.get("disposition"),
                    r.get("hangup_by"),
                    r.get("target"),
                    r.get("final_code"),
                    r.get("a_rtp_in"),
                    r.get("b_rtp_in"),
                )
            })
            .collect();
        let events: Vec<String> =
            sqlx::query_scalar("SELECT type FROM events WHERE call_uuid IS NOT NULL ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap();
        let migrations: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        (calls, events, migrations)
    });
    assert_eq!(calls.len(), 1, "one record in PostgreSQL: {calls:?}");
    let (disposition, hangup_by, target, code, a_in, b_in) = &calls[0];
    assert_eq!(
        (
            disposition.as_str(),
            hangup_by.as_deref(),
            target.as_deref(),
            *code
        ),
        ("answered", Some("caller"), Some("2001"), 200),
        "{calls:?}"
    );
    assert!(*a_in > 10 && *b_in > 10, "RTP both ways: {calls:?}");
    for kind in ["call.arrived", "call.answered", "call.ended"] {
        assert!(events.iter().any(|e| e == kind), "{kind} in {events:?}");
    }
    assert_eq!(migrations, [1, 2]);
    assert!(
        !server.data_dir().join("switchboard.db").exists(),
        "nothing goes to SQLite when the store is PostgreSQL"
    );
}

#[test]
fn a_store_that_is_not_postgresql_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.yaml");
    std::fs::write(
        &config,
        "sip:\n  listen: [\"udp:127.0.0.1:5060\"]\nrtp:\n  ports: \"40000-40009\"\nstore: mysql://db/switchboard\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("switchboard.yaml:5:") && text.contains("store must be a PostgreSQL URL"),
        "{text}"
    );
}
