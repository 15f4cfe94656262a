-- The change feed (server/src/store/feed.rs): one row per change to a user or a membership,
-- written by triggers inside the writing transaction, so every writer (membershipd, the CLI,
-- a snapshot import) feeds it and a reader sees a change exactly when it commits. Readers keep
-- their place by `seq`; only the newest 100,000 rows are kept, and a reader further behind
-- starts over (it forgets what it copied).
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('user', 'member')),
    key     TEXT NOT NULL,        -- user: its signing key; member: the member's signing key
    room_id TEXT                  -- member: the room
);

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
CREATE TRIGGER changes_pruned AFTER INSERT ON changes BEGIN
    DELETE FROM changes WHERE seq <= NEW.seq - 100000;
END;
