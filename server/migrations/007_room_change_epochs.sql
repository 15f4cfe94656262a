-- A room's change carries the epoch the change left it at, so that a reader that keeps rooms'
-- latest epochs (the authorization cache) takes it from the change instead of reading the room
-- again: after a rekey of a large room, every member's key fetch would otherwise ask the store.
-- Changes written before have no epoch (NULL): a reader reads those rooms again.
ALTER TABLE changes ADD COLUMN epoch INTEGER;  -- room: its epoch after the change; NULL if gone

DROP TRIGGER rooms_inserted;
DROP TRIGGER rooms_updated;
CREATE TRIGGER rooms_inserted AFTER INSERT ON rooms BEGIN
    INSERT INTO changes (kind, key, epoch) VALUES ('room', NEW.id, NEW.epoch);
END;
CREATE TRIGGER rooms_updated AFTER UPDATE ON rooms BEGIN
    INSERT INTO changes (kind, key, epoch)
        VALUES ('room', OLD.id, CASE WHEN NEW.id = OLD.id THEN NEW.epoch END);
    INSERT INTO changes (kind, key, epoch)
        SELECT 'room', NEW.id, NEW.epoch WHERE NEW.id != OLD.id;
END;
