-- private_key_jwt client authentication (RFC 7523).
-- A client assertion's jti is single use across every node: its SHA-256
-- (of client_id, a newline and the jti) is inserted before the assertion is
-- accepted, and a row that already exists refuses the replay. Rows outlive
-- the assertion's exp; housekeeping purges them after.
CREATE TABLE client_assertion_jtis (
    jti_hash    text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX client_assertion_jtis_expires ON client_assertion_jtis (expires_at);

-- JWKS documents fetched from a client's jwks_uri, shared by every node
-- until expires_at (the document's Cache-Control, clamped like CIMD's).
CREATE TABLE jwks_cache (
    jwks_uri    text PRIMARY KEY,
    jwks        text NOT NULL,
    expires_at  timestamptz NOT NULL
);
