-- History shares (docs/protocol.md §16): an earlier epoch's room key that the room's owner sealed
-- to a member who was not in that epoch's manifest, signed by the owner. One per room, epoch and
-- member; a member's shares go when the member's user is deleted.
CREATE TABLE history_shares (
    room_id TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    member  TEXT NOT NULL,                -- canonical lowercase hex
    share   BLOB NOT NULL,                -- the share's wire form, as uploaded
    PRIMARY KEY (room_id, epoch, member)
);

CREATE INDEX history_shares_by_member ON history_shares (member);
