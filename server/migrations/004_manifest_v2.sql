-- Rekey manifest format 2 (docs/protocol.md §8): an epoch is kept as its signed head (header and
-- signature, the same for every member) and one tail per member (leaf index, entry, audit path);
-- a member's part is head || tail. Format-1 manifests cannot be served in format 2 and no
-- deployment holds any, so their tables go; rooms keep their epoch numbers, and the next rekey
-- continues from them.
DROP TABLE room_keys;
DROP TABLE manifests;

CREATE TABLE epoch_heads (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    epoch   INTEGER NOT NULL,
    head    BLOB NOT NULL,                -- the signed header: header || signature
    PRIMARY KEY (room_id, epoch)
);

CREATE TABLE epoch_tails (
    room_id TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    member  TEXT NOT NULL,                -- canonical lowercase hex
    tail    BLOB NOT NULL,                -- u32 index || entry || u8 k || k hashes
    PRIMARY KEY (room_id, epoch, member),
    FOREIGN KEY (room_id, epoch) REFERENCES epoch_heads (room_id, epoch)
);
