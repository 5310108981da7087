//! The store's schema as numbered migrations, one list per database, run at every start
//! by sqlx's migrator: each is applied once, in order, and recorded in the database's
//! `_sqlx_migrations` table with its checksum (an edited migration that already ran
//! stops the start instead of leaving two servers on different schemas). On PostgreSQL
//! the migrator holds an advisory lock, so nodes starting together apply each one once.
//!
//! A new migration is a new file and a new line below; a released one is never edited.

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{PgPool, SqlitePool};

/// (version, description, SQL)
type Steps = &'static [(i64, &'static str, &'static str)];

const SQLITE: Steps = &[
    (
        1,
        "schema",
        include_str!("migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        "cluster",
        include_str!("migrations/sqlite/0002_cluster.sql"),
    ),
];

const POSTGRES: Steps = &[
    (
        1,
        "schema",
        include_str!("migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "cluster",
        include_str!("migrations/postgres/0002_cluster.sql"),
    ),
];

/// Migrations compiled into the binary, so that a server never depends on files beside it.
#[derive(Debug)]
struct Embedded(Steps);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        let steps = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into(),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(steps) })
    }
}

pub(super) async fn sqlite(pool: &SqlitePool) -> anyhow::Result<()> {
    upgrade_unversioned(pool).await?;
    Migrator::new(Embedded(SQLITE)).await?.run(pool).await?;
    Ok(())
}

pub(super) async fn postgres(pool: &PgPool) -> anyhow::Result<()> {
    Migrator::new(Embedded(POSTGRES)).await?.run(pool).await?;
    Ok(())
}

/// Columns that SQLite databases made before versioned migrations may lack: such a
/// database is brought up to migration 1 (whose tables then all exist) before the
/// migrator records it.
const UNVERSIONED_COLUMNS: [(&str, &str, &str); 16] = [
    ("calls", "bridged_ms", "INTEGER"),
    ("calls", "flow", "TEXT"),
    ("calls", "ivr_trace", "TEXT"),
    ("calls", "queue", "TEXT"),
    ("calls", "csat", "INTEGER"),
    ("calls", "resolved", "INTEGER"),
    ("calls", "voicemail", "TEXT"),
    ("calls", "recording", "TEXT"),
    ("calls", "recording_ms", "INTEGER"),
    ("calls", "a_rtp_lost", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "b_rtp_lost", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "a_jitter_ms", "REAL NOT NULL DEFAULT 0"),
    ("calls", "b_jitter_ms", "REAL NOT NULL DEFAULT 0"),
    ("calls", "kernel_rtp", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "media_path", "TEXT"),
    ("queue_log", "seq", "INTEGER"),
];

async fn upgrade_unversioned(pool: &SqlitePool) -> anyhow::Result<()> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(pool)
            .await?;
    let has = |t: &str| tables.iter().any(|n| n == t);
    if has("_sqlx_migrations") {
        return Ok(());
    }
    for table in ["calls", "queue_log"] {
        if !has(table) {
            continue;
        }
        let columns: Vec<String> =
            sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(pool)
                .await?;
        for (_, column, kind) in UNVERSIONED_COLUMNS.iter().filter(|c| c.0 == table) {
            if !columns.iter().any(|c| c == column) {
                sqlx::raw_sql(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                    .execute(pool)
                    .await?;
            }
        }
    }
    Ok(())
}
