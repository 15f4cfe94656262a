-- The change feed also names rooms: a room's record changes when it is created and whenever a
-- new epoch moves it, and the authorization cache keeps each room's latest epoch from it.
-- SQLite cannot widen a CHECK in place, so the table is built again with its rows (their
-- sequence numbers kept, so a reader's place stays valid) and its triggers.
DROP TRIGGER users_inserted;
DROP TRIGGER users_updated;
DROP TRIGGER users_deleted;
DROP TRIGGER members_inserted;
DROP TRIGGER members_deleted;
DROP TRIGGER changes_pruned;

CREATE TABLE changes_006 (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('user', 'member', 'room')),
    key     TEXT NOT NULL,        -- user: its signing key; member: the member's; room: its id
    room_id TEXT                  -- member: the room
);
INSERT INTO changes_006 (seq, kind, key, room_id) SELECT seq, kind, key, room_id FROM changes;
DROP TABLE changes;
ALTER TABLE changes_006 RENAME TO changes;

CREATE TRIGGER users_inserted AFTER INSERT ON users BEGIN
    INSERT INTO changes (kind, key) VALUES ('user', NEW.sign_key);
END;
CREATE TRIGGER users_updated AFTER UPDATE ON users BEGIN
    INSERT INTO changes (kind, key) VALUES ('user', OLD.sign_key);
    INSERT INTO changes (kind, key) SELECT 'user', NEW.sign_key WHERE NEW.sign_key != OLD.sign_key;
END;
CREATE TRIGGER users_deleted AFTER DELETE ON users BEGIN
    INSERT INTO changes (kind, key) VALUES ('user', OLD.sign_key);
END;
CREATE TRIGGER members_inserted AFTER INSERT ON members BEGIN
    INSERT INTO changes (kind, key, room_id) VALUES ('member', NEW.member, NEW.room_id);
END;
CREATE TRIGGER members_deleted AFTER DELETE ON members BEGIN
    INSERT INTO changes (kind, key, room_id) VALUES ('member', OLD.member, OLD.room_id);
END;
CREATE TRIGGER rooms_inserted AFTER INSERT ON rooms BEGIN
    INSERT INTO changes (kind, key) VALUES ('room', NEW.id);
END;
CREATE TRIGGER rooms_updated AFTER UPDATE ON rooms BEGIN
    INSERT INTO changes (kind, key) VALUES ('room', OLD.id);
    INSERT INTO changes (kind, key) SELECT 'room', NEW.id WHERE NEW.id != OLD.id;
END;
CREATE TRIGGER rooms_deleted AFTER DELETE ON rooms BEGIN
    INSERT INTO changes (kind, key) VALUES ('room', OLD.id);
END;
CREATE TRIGGER changes_pruned AFTER INSERT ON changes BEGIN
    DELETE FROM changes WHERE seq <= NEW.seq - 100000;
END;
