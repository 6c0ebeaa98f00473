-- Incoming webhooks (docs/webhooks.md).
--
-- Hooks created through the admin API. Those of the configuration file are not stored:
-- every ingress replica reads the same file. `definition` is the handler in the
-- configuration's JSON shape, checked by the same parser (common/incoming.c) on the way
-- in and on the way out, so the two kinds of hook never mean different things. It holds
-- the hook's secrets: a signature (GitHub's, Standard Webhooks') is an HMAC, and checking
-- one needs the key itself; the admin API never answers them.
CREATE TABLE webhook_hooks (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,100}$'),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row whose number moves on every change of webhook_hooks: ingress replicas read it
-- every second and reload their hooks only when it moved.
CREATE TABLE webhook_hooks_generation (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n   bigint NOT NULL
);
INSERT INTO webhook_hooks_generation VALUES (true, 1);

CREATE FUNCTION webhook_hooks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE webhook_hooks_generation SET n = n + 1;
    RETURN NULL;
END $$;
-- A path reaches one hook: two admins creating the same path at once cannot both win.
CREATE UNIQUE INDEX webhook_hooks_path_uq ON webhook_hooks ((definition->>'path'));

CREATE TRIGGER webhook_hooks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON webhook_hooks FOR EACH STATEMENT EXECUTE FUNCTION webhook_hooks_changed();

-- Idempotency: a delivery id (Idempotency-Key, X-GitHub-Delivery, webhook-id) seen by any
-- replica in the window is answered with the event of its first delivery. `published`
-- turns true once Kafka acknowledged that event: a first delivery whose publish failed
-- is published again (same event id) by the next attempt instead of being answered
-- as done. `publishing_until` is the lease of the request publishing it: a duplicate that
-- arrives meanwhile is told to retry (409) rather than publishing a second time, and one
-- that arrives after a publisher died takes the lease over. The hook id is not a foreign
-- key: configuration hooks have no row.
CREATE TABLE webhook_deliveries (
    hook_id      text NOT NULL,
    delivery_key text NOT NULL CHECK (length(delivery_key) BETWEEN 1 AND 256),
    event_id     uuid NOT NULL,
    body_sha256  text NOT NULL,
    published    boolean NOT NULL DEFAULT false,
    publishing_until timestamptz NOT NULL DEFAULT now() + interval '30 seconds',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hook_id, delivery_key)
);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);
