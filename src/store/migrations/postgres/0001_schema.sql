-- The same tables as SQLite's, in PostgreSQL's types: 64-bit integers throughout (the
-- server binds every number as one), DOUBLE PRECISION for SQLite's REAL.
CREATE TABLE IF NOT EXISTS calls (
    id BIGSERIAL PRIMARY KEY,
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
    arrived_ms BIGINT NOT NULL,
    ringing_ms BIGINT,
    answered_ms BIGINT,
    ended_ms BIGINT NOT NULL,
    hangup_by TEXT,
    disposition TEXT NOT NULL,
    final_code BIGINT NOT NULL,
    reason TEXT,
    a_rtp_in BIGINT NOT NULL DEFAULT 0,
    a_rtp_out BIGINT NOT NULL DEFAULT 0,
    b_rtp_in BIGINT NOT NULL DEFAULT 0,
    b_rtp_out BIGINT NOT NULL DEFAULT 0,
    bridged_ms BIGINT,
    flow TEXT,
    ivr_trace TEXT,
    queue TEXT,
    csat BIGINT,
    resolved BIGINT,
    voicemail TEXT,
    recording TEXT,
    recording_ms BIGINT,
    a_rtp_lost BIGINT NOT NULL DEFAULT 0,
    b_rtp_lost BIGINT NOT NULL DEFAULT 0,
    a_jitter_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    b_jitter_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    kernel_rtp BIGINT NOT NULL DEFAULT 0,
    media_path TEXT
);
CREATE INDEX IF NOT EXISTS calls_arrived ON calls (arrived_ms);
CREATE TABLE IF NOT EXISTS queue_log (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    queue TEXT,
    call_uuid TEXT,
    agent TEXT,
    event TEXT NOT NULL,
    wait_ms BIGINT,
    talk_ms BIGINT,
    detail TEXT,
    -- The event log's sequence number of the same event.
    seq BIGINT
);
CREATE INDEX IF NOT EXISTS queue_log_at ON queue_log (at_ms);
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
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
    id BIGSERIAL PRIMARY KEY,
    call_uuid TEXT NOT NULL,
    code TEXT NOT NULL,
    resolved BIGINT NOT NULL,
    note TEXT,
    agent TEXT,
    set_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_call ON outcomes (call_uuid);
CREATE INDEX IF NOT EXISTS calls_from_user ON calls (from_user, arrived_ms);
CREATE TABLE IF NOT EXISTS webhook_cursors (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
