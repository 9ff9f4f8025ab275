-- DPoP-bound tokens (RFC 9449). jkt is the RFC 7638 SHA-256 thumbprint
-- (base64url) of the client's proof key: an access token that has one is
-- accepted only with a proof signed by that key (never as a Bearer token);
-- a public client's refresh token that has one is redeemed only with such a
-- proof. NULL: a Bearer token. Nodes that predate the column ignore it, so
-- a rolling upgrade only delays binding until every node is new.
ALTER TABLE tokens ADD COLUMN jkt text CHECK (jkt IS NULL OR length(jkt) = 43);
