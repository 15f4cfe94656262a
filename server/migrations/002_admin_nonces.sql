-- Nonces of signed admin requests, kept until their request could no longer be accepted, so a
-- replay is refused by every membershipd instance that shares this store.
CREATE TABLE admin_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL   -- Unix ms
);
CREATE INDEX admin_nonces_by_expiry ON admin_nonces (expires_at);
