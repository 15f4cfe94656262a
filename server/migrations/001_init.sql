-- The control plane: users (public keys only), invites (token digests only), rooms, members,
-- and every epoch's signed manifest with its per-member sealed copies.

CREATE TABLE users (
    sign_key   TEXT PRIMARY KEY,          -- ed25519, 64 lowercase hex
    kex_key    TEXT NOT NULL,             -- x25519, 64 lowercase hex
    admin      INTEGER NOT NULL DEFAULT 0,
    status     TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at INTEGER NOT NULL,          -- Unix ms
    invite_id  TEXT                       -- the invite redeemed to create this user
);

CREATE TABLE invites (
    id           TEXT PRIMARY KEY,        -- hex SHA-256 of the token; the token is never stored
    admin        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    created_by   TEXT,
    expires_at   INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0,
    used_at      INTEGER,
    used_by      TEXT,
    cancelled_at INTEGER
);

CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    epoch      INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE members (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    member  TEXT NOT NULL,
    PRIMARY KEY (room_id, member)
);
CREATE INDEX members_by_member ON members (member, room_id);

CREATE TABLE manifests (
    room_id  TEXT NOT NULL REFERENCES rooms (id),
    epoch    INTEGER NOT NULL,
    manifest BLOB NOT NULL,               -- the signed manifest's wire form
    PRIMARY KEY (room_id, epoch)
);

CREATE TABLE room_keys (
    room_id TEXT NOT NULL,
    member  TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    sealed  BLOB NOT NULL,                -- 81-byte sealed room key
    PRIMARY KEY (room_id, member, epoch),
    FOREIGN KEY (room_id, epoch) REFERENCES manifests (room_id, epoch)
);
