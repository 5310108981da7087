-- Several nodes on one database: each event names the node that logged it (empty on a
-- single server), so a start or a survivor closes only that node's unfinished calls.
ALTER TABLE events ADD COLUMN node TEXT NOT NULL DEFAULT '';
-- Every node's heartbeat: a node whose beat is older than the cluster's dead_after is
-- taken for dead, and a survivor records its calls in progress as interrupted.
CREATE TABLE IF NOT EXISTS cluster_nodes (
    name TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    beat_ms BIGINT NOT NULL,
    -- serving | draining | stopped | dead
    state TEXT NOT NULL
);
-- Each node's registered phones, so that every node can ring an agent whichever node
-- its REGISTER reached: per node and user, the bindings as JSON.
CREATE TABLE IF NOT EXISTS registrations (
    node TEXT NOT NULL,
    username TEXT NOT NULL,
    bindings TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (node, username)
);
