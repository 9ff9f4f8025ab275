-- MCP session bindings keyed per downstream (the session id is the
-- downstream's: two resource paths in front of one downstream share its
-- sessions, and a binding made through one is checked through the other).
-- A presented session id with no binding is refused (fail closed), so rows
-- of the old per-resource table are not carried over: those sessions are
-- answered 404 once and the client re-initialises. mcp_sessions stays for
-- nodes of the previous version during a rolling upgrade; housekeeping
-- empties it.
CREATE TABLE mcp_session_bindings (
    downstream    text NOT NULL,
    session_hash  bytea NOT NULL,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (downstream, session_hash)
);
CREATE INDEX mcp_session_bindings_created ON mcp_session_bindings (created_at);
