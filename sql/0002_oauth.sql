-- The double OAuth flow: clients, users, consents, pending authorizations,
-- grants with encrypted upstream tokens, codes and tokens. Broker-issued
-- secrets are stored only as SHA-256; upstream tokens only as AES-256-GCM
-- ciphertext (version || nonce || ciphertext || tag) under key_id, with the
-- grant id as associated data.

CREATE TABLE clients (
    client_id                   text PRIMARY KEY,
    kind                        text NOT NULL CHECK (kind IN ('static', 'dynamic', 'cimd')),
    client_name                 text,
    redirect_uris               text[] NOT NULL,
    secret_hash                 bytea,
    token_endpoint_auth_method  text NOT NULL DEFAULT 'none',
    grant_types                 text[] NOT NULL DEFAULT ARRAY['authorization_code', 'refresh_token'],
    metadata                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    registration_ip             inet,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    last_used_at                timestamptz,
    disabled_at                 timestamptz
);
CREATE INDEX clients_registration ON clients (registration_ip, created_at) WHERE kind = 'dynamic';

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    upstream       text NOT NULL,
    subject        text NOT NULL,
    login          text,
    email          text,
    name           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (upstream, subject)
);

-- Per-user record of the clients a user approved (confused-deputy defence).
CREATE TABLE consents (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   text NOT NULL,
    resource    text NOT NULL,
    scopes      text[] NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id, resource)
);

-- Consented requests waiting for the upstream callback. state_hash is
-- SHA-256 of the upstream state; browser_hash of the browser-binding cookie.
CREATE TABLE pending_authorizations (
    state_hash      bytea PRIMARY KEY,
    browser_hash    bytea NOT NULL,
    client_id       text NOT NULL,
    redirect_uri    text NOT NULL,
    client_state    text,
    code_challenge  text NOT NULL,
    resource        text NOT NULL,
    scopes          text[] NOT NULL,
    upstream        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX pending_expiry ON pending_authorizations (expires_at);

CREATE TABLE grants (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id),
    client_id       text NOT NULL,
    resource        text NOT NULL,
    upstream        text NOT NULL,
    scopes          text[] NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    key_id          text NOT NULL,
    up_access       bytea,
    up_refresh      bytea,
    up_expires_at   timestamptz,
    up_scope        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_upstream ON grants (upstream);
CREATE INDEX grants_key ON grants (key_id);

CREATE TABLE auth_codes (
    code_hash       bytea PRIMARY KEY,
    grant_id        uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    client_id       text NOT NULL,
    redirect_uri    text NOT NULL,
    code_challenge  text NOT NULL,
    resource        text NOT NULL,
    scopes          text[] NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

-- Access and refresh tokens. A rotated refresh token keeps (used_at,
-- successor) so that a retry inside the grace window gets the same pair:
-- successor is the new pair encrypted under a key derived from the rotated
-- token itself, so only its holder can read it.
CREATE TABLE tokens (
    token_hash   bytea PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('access', 'refresh')),
    grant_id     uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    client_id    text NOT NULL,
    resource     text NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    successor    bytea,
    revoked_at   timestamptz
);
CREATE INDEX tokens_grant ON tokens (grant_id);
CREATE INDEX tokens_expiry ON tokens (expires_at);

-- MCP sessions seen through the proxy, bound to the user and resource of the
-- token that opened them (session-hijacking defence). session_hash is
-- SHA-256 of the Mcp-Session-Id.
CREATE TABLE mcp_sessions (
    session_hash  bytea PRIMARY KEY,
    resource      text NOT NULL,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_sessions_created ON mcp_sessions (created_at);

-- Upstream revocation of revoked grants, retried with backoff in the
-- background by whichever node claims the row; the grant is dead locally
-- from the moment it is revoked, whatever the upstream answers.
CREATE TABLE upstream_revocations (
    grant_id      uuid PRIMARY KEY REFERENCES grants (id) ON DELETE CASCADE,
    upstream      text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    outcome       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upstream_revocations_due ON upstream_revocations (next_attempt) WHERE done_at IS NULL;
