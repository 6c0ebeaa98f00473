-- The LLM worker: whether a model is called streaming, and one row per LLM request the
-- worker has finished, keyed by the agentbus.llm.request event id. A redelivered request
-- finds its row and only publishes again what the row says (the same events, with the
-- same ids), so a request is answered at most once however often Kafka hands it over.
-- The row holds everything those events carry (names included), so publishing never
-- depends on what was loaded for the call.

ALTER TABLE llm_models ADD COLUMN stream boolean NOT NULL DEFAULT true;

CREATE TABLE llm_requests (
    id                uuid PRIMARY KEY, -- the agentbus.llm.request event id
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id   uuid REFERENCES conversations (id) ON DELETE SET NULL,
    message_event_id  uuid NOT NULL,    -- the message answered (its chat_messages id)
    agent_id          uuid REFERENCES agents (id) ON DELETE SET NULL, -- the native agent asked
    agent_name        text NOT NULL,
    sender_agent_id   uuid REFERENCES agents (id) ON DELETE SET NULL,
    sender_name       text NOT NULL,
    sender_type       text NOT NULL,    -- 'openclaw', 'native', or '' when unknown
    hops              integer NOT NULL DEFAULT 0,
    status            text NOT NULL CHECK (status IN ('answered', 'failed', 'skipped')),
    reply_message_id  uuid,             -- the answer's chat_messages id and event id
    model_id          uuid,             -- the model that answered, or was tried last
    model_name        text,
    finish_reason     text,
    attempts          jsonb NOT NULL DEFAULT '[]', -- every call: model, outcome, status, ms
    error_code        text,             -- failed/skipped: why, as a stable word
    error_message     text,
    latency_ms        bigint,           -- from the request's arrival to its result
    first_token_ms    bigint,           -- of the answering call, from its start
    usage             jsonb,            -- the provider's token counts, as sent
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_requests_agent_idx ON llm_requests (agent_id, created_at);
