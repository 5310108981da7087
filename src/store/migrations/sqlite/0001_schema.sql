-- The schema as it stood when migrations began (every table is created only if it is
-- missing: a database made before then already has them, brought up to date first).
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_uuid TEXT NOT NULL UNIQUE,
    a_call_id TEXT NOT NULL,
    b_call_id TEXT,
    from_uri TEXT NOT NULL,
    from_user TEXT NOT NULL,
    to_uri TEXT NOT NULL,
    dialed TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    trunk TEXT,
    did TEXT,
    caller_user TEXT,
    target TEXT,
    arrived_ms INTEGER NOT NULL,
    ringing_ms INTEGER,
    answered_ms INTEGER,
    ended_ms INTEGER NOT NULL,
    hangup_by TEXT,
    disposition TEXT NOT NULL,
    final_code INTEGER NOT NULL,
    reason TEXT,
    a_rtp_in INTEGER NOT NULL DEFAULT 0,
    a_rtp_out INTEGER NOT NULL DEFAULT 0,
    b_rtp_in INTEGER NOT NULL DEFAULT 0,
    b_rtp_out INTEGER NOT NULL DEFAULT 0,
    bridged_ms INTEGER,
    flow TEXT,
    ivr_trace TEXT,
    queue TEXT,
    csat INTEGER,
    resolved INTEGER,
    voicemail TEXT,
    recording TEXT,
    recording_ms INTEGER,
    a_rtp_lost INTEGER NOT NULL DEFAULT 0,
    b_rtp_lost INTEGER NOT NULL DEFAULT 0,
    a_jitter_ms REAL NOT NULL DEFAULT 0,
    b_jitter_ms REAL NOT NULL DEFAULT 0,
    kernel_rtp INTEGER NOT NULL DEFAULT 0,
    media_path TEXT
);
CREATE INDEX IF NOT EXISTS calls_arrived ON calls (arrived_ms);
CREATE TABLE IF NOT EXISTS queue_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    queue TEXT,
    call_uuid TEXT,
    agent TEXT,
    event TEXT NOT NULL,
    wait_ms INTEGER,
    talk_ms INTEGER,
    detail TEXT,
    -- The event log's sequence number of the same event.
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS queue_log_at ON queue_log (at_ms);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    type TEXT NOT NULL,
    call_uuid TEXT,
    queue TEXT,
    agent TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
CREATE INDEX IF NOT EXISTS events_call ON events (call_uuid);
CREATE INDEX IF NOT EXISTS events_type ON events (type);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_uuid TEXT NOT NULL,
    code TEXT NOT NULL,
    resolved INTEGER NOT NULL,
    note TEXT,
    agent TEXT,
    set_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_call ON outcomes (call_uuid);
CREATE INDEX IF NOT EXISTS calls_from_user ON calls (from_user, arrived_ms);
CREATE TABLE IF NOT EXISTS webhook_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
