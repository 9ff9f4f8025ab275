-- Connected accounts (DESIGN: a resource's "connect" upstreams). Beside the
-- grant's sign-in session (grants.up_*), a grant holds one encrypted session
-- per further upstream the user connected in band. Tokens are sealed like
-- the grant's, with "<grant id>:<upstream>:access" (or ":refresh") as
-- associated data, so a ciphertext moved to another grant or upstream fails
-- to open. subject/login name the upstream account that was connected.
CREATE TABLE grant_connections (
    grant_id       uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    upstream       text NOT NULL,
    subject        text NOT NULL,
    login          text,
    key_id         text NOT NULL,
    up_access      bytea NOT NULL,
    up_refresh     bytea,
    up_expires_at  timestamptz,
    up_scope       text,
    connected_at   timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grant_id, upstream)
);
CREATE INDEX grant_connections_key ON grant_connections (key_id);

-- The one-time tickets that URL elicitations carry (only their SHA-256 is
-- stored). Opening the connect page does not spend a ticket (link
-- previewers fetch URLs); starting the flow from it does.
CREATE TABLE connect_tickets (
    ticket_hash     bytea PRIMARY KEY,
    elicitation_id  text NOT NULL,
    grant_id        uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    upstream        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX connect_tickets_expiry ON connect_tickets (expires_at);

-- Connect flows under way, bound to the browser that spent the ticket:
-- leg 'identity' (the sign-in upstream proves the browser is the grant's
-- user), then leg 'account' (the connect upstream's own OAuth flow).
CREATE TABLE pending_connects (
    state_hash      bytea PRIMARY KEY,
    browser_hash    bytea NOT NULL,
    grant_id        uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    upstream        text NOT NULL,
    leg             text NOT NULL CHECK (leg IN ('identity', 'account')),
    elicitation_id  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX pending_connects_expiry ON pending_connects (expires_at);
