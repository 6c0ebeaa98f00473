-- The notifier's records: every delivery attempt, the retries waiting for their time, the
-- deliveries that used up their attempts (dead letters, replayable), and the health of
-- each outgoing webhook endpoint.

-- One row per attempt. delivery_id is the id of the delivery job's event (the
-- webhook-id of an outgoing webhook, the source of a Feishu send's uuid), so a delivery's
-- attempts read in order; replay counts an operator's replays of its dead letter (0 for the
-- first run); (delivery_id, replay, attempt) is unique, so an attempt redone after a crash
-- replaces its row rather than adding one.
CREATE TABLE notify_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      uuid NOT NULL,
    replay           integer NOT NULL DEFAULT 0,
    attempt          integer NOT NULL CHECK (attempt > 0),
    kind             text NOT NULL CHECK (kind IN ('feishu', 'webhook')),
    destination      text NOT NULL, -- "webhook:<endpoint id>", "feishu:<member id>"
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'deferred')),
    code             text NOT NULL DEFAULT '', -- why it failed: http_503, feishu_230013, ...
    status           integer,                  -- the HTTP status, NULL if none came
    latency_ms       integer NOT NULL DEFAULT 0,
    response_excerpt text NOT NULL DEFAULT '', -- the first bytes of the response body
    error            text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, replay, attempt)
);
CREATE INDEX notify_attempts_destination_idx ON notify_attempts (destination, created_at);

-- Retries whose time has not come: written by whichever notifier consumed the retry from
-- agentbus.notify.retry, claimed when due by any notifier (a lease, so one that dies
-- mid-attempt leaves it to another). The row is the retry event itself.
CREATE TABLE notify_scheduled (
    id          uuid PRIMARY KEY, -- the retry event's id
    due_at      timestamptz NOT NULL,
    lease_until timestamptz,
    event       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_scheduled_due_idx ON notify_scheduled (due_at);

-- Deliveries that used up their attempts or failed for good. job is the delivery's event
-- as first published, so a replay sends exactly it again (same id: the receiver's
-- webhook-id, Feishu's uuid).
CREATE TABLE notify_dead_letters (
    id          uuid PRIMARY KEY, -- the delivery id
    kind        text NOT NULL,
    destination text NOT NULL,
    endpoint_id text,             -- outgoing webhooks
    tenant_id   uuid,
    event_type  text NOT NULL DEFAULT '',
    attempts    integer NOT NULL,
    code        text NOT NULL DEFAULT '',
    error       text NOT NULL DEFAULT '',
    job         text NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    replays     integer NOT NULL DEFAULT 0
);
CREATE INDEX notify_dead_letters_endpoint_idx ON notify_dead_letters (endpoint_id, dead_at);
CREATE INDEX notify_dead_letters_dead_at_idx ON notify_dead_letters (dead_at);

-- Outgoing endpoints are configured in the config file; what happens to them at run time
-- lives here, shared by every notifier: disabled (410 Gone, or by an operator), and the
-- run of failures that reports an endpoint as failing.
CREATE TABLE webhook_endpoint_state (
    endpoint_id          text PRIMARY KEY,
    disabled_at          timestamptz,
    disabled_reason      text NOT NULL DEFAULT '',
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    last_failure_at      timestamptz,
    last_success_at      timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
