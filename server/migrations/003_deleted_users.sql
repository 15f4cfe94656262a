-- Tombstones of deleted users. A deleted signing key is never registered or added again, so its
-- inert memberships, its admin flag and its logins cannot come back through any path.
CREATE TABLE deleted_users (
    sign_key   TEXT PRIMARY KEY,  -- canonical lowercase hex
    deleted_at INTEGER NOT NULL   -- Unix ms
);
