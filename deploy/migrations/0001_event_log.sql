-- The dispatcher's journal of every event it has taken from agentbus.ingress. The event id
-- is the primary key, so a redelivered event (at-least-once) is written once.
CREATE TABLE event_log (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    source       text NOT NULL,
    subject      text,
    event_time   timestamptz,
    data         jsonb,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    kafka_offset bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX event_log_type_received_idx ON event_log (type, received_at);
