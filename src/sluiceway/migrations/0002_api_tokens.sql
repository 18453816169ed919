-- API tokens: Bearer tokens for API callers, stored as sha256 hashes (never in plain text).
-- depends: 0001_dsa_schema

CREATE TABLE dsa_core.api_tokens (
    token_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner        text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    token_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_owner_idx ON dsa_core.api_tokens (owner);
