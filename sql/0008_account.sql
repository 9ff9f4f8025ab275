-- The user's own page (GET /account): sign-ins under way, bound to the
-- browser that started them (only SHA-256 of the upstream state and of the
-- browser cookie is stored). A finished sign-in lives only in a sealed,
-- short-lived cookie: nothing here outlives the flow.
CREATE TABLE pending_account_logins (
    state_hash    bytea PRIMARY KEY,
    browser_hash  bytea NOT NULL,
    upstream      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX pending_account_logins_expiry ON pending_account_logins (expires_at);

-- Upstream revocation of connected accounts (grant_connections rows) that
-- were disconnected, or whose grant was revoked: the sealed tokens move
-- here with the row (same key and associated data), the local session is
-- gone at once, and the revoker tells the upstream with retries, then
-- erases the tokens.
CREATE TABLE connection_revocations (
    id            bigserial PRIMARY KEY,
    grant_id      uuid NOT NULL,
    upstream      text NOT NULL,
    subject       text NOT NULL,
    key_id        text NOT NULL,
    up_access     bytea,
    up_refresh    bytea,
    reason        text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    outcome       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connection_revocations_due ON connection_revocations (next_attempt) WHERE done_at IS NULL;

-- "Last used" on the account page is a grant's latest tool.called: the
-- index by grant alone becomes one by (grant, event, time), which serves
-- both (no second index to write on every audit record).
CREATE INDEX audit_events_grant_event ON audit_events (grant_id, event, at) WHERE grant_id IS NOT NULL;
DROP INDEX audit_events_grant;
