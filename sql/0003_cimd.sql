-- Client ID Metadata Documents: a URL client_id's document is cached in the
-- clients table (kind 'cimd') until cimd_expires_at, so every node shares it.
-- last_used_at (set at code exchange) lets housekeeping purge dynamically
-- registered clients that never completed a flow.
ALTER TABLE clients ADD COLUMN cimd_expires_at timestamptz;
