-- Switchboard's transactional outbox (docs/outbox.md). The application inserts one row per
-- publish inside its own transaction; `switchboard-server outbox-relay` publishes committed rows
-- per partition in id order and deletes them.
CREATE TABLE IF NOT EXISTS switchboard_outbox (
    id bigserial PRIMARY KEY,                      -- in the publish's idempotency key
    partition integer NOT NULL,                    -- crc32(channel, UTF-8) % partitions
    channel text NOT NULL,
    data jsonb NOT NULL,
    event text,                                    -- optional event name (Pusher's)
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS switchboard_outbox_partition_id ON switchboard_outbox (partition, id);

-- A wake-up hint for the relay: only the partition number, never the message (NOTIFY payloads
-- are limited to 8000 bytes and are lost when no relay listens). Drop the trigger to rely on
-- polling alone.
CREATE OR REPLACE FUNCTION switchboard_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_outbox', NEW.partition::text);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER switchboard_outbox_notify AFTER INSERT ON switchboard_outbox
    FOR EACH ROW EXECUTE FUNCTION switchboard_outbox_notify();
