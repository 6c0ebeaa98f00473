-- The gateway's data model: tenants, agents and their API keys, the humans of an
-- organisation, relationships, channel and LLM model configuration, conversations, chat
-- messages, and the inbox of gateway messages that OpenClaw agents poll.
-- Every row belongs to one tenant; lookups always filter by it (Clawith's cross-tenant
-- bugs S3/S4 are what this prevents).

CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE llm_models (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    provider               text NOT NULL CHECK (provider IN ('openai', 'openclaw')),
    base_url               text NOT NULL CHECK (base_url ~ '^https?://'),
    model                  text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    api_key                text NOT NULL DEFAULT '', -- the provider's key: never returned
    connect_timeout_ms     integer NOT NULL DEFAULT 5000 CHECK (connect_timeout_ms > 0),
    first_token_timeout_ms integer NOT NULL DEFAULT 60000 CHECK (first_token_timeout_ms > 0),
    idle_timeout_ms        integer NOT NULL DEFAULT 30000 CHECK (idle_timeout_ms > 0),
    total_timeout_ms       integer NOT NULL DEFAULT 300000 CHECK (total_timeout_ms > 0),
    max_concurrency        integer NOT NULL DEFAULT 8 CHECK (max_concurrency > 0),
    enabled                boolean NOT NULL DEFAULT true,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE agents (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    type              text NOT NULL CHECK (type IN ('openclaw', 'native')),
    role_description  text NOT NULL DEFAULT '' CHECK (length(role_description) <= 20000),
    primary_model_id  uuid REFERENCES llm_models (id) ON DELETE SET NULL,
    fallback_model_id uuid REFERENCES llm_models (id) ON DELETE SET NULL,
    creator           text NOT NULL DEFAULT '',
    last_seen_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Names are unique per tenant, whatever their case: targets resolve by exact name.
CREATE UNIQUE INDEX agents_tenant_name_uq ON agents (tenant_id, lower(name));

-- Only a SHA-256 of each key is stored; keys are 256 random bits, so an unsalted hash is
-- enough, and a stored hash is never accepted as a key (Clawith's pass-the-hash, S2).
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id   uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    key_hash   text NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX api_keys_one_active_per_agent ON api_keys (agent_id) WHERE revoked_at IS NULL;

CREATE TABLE org_members (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    feishu_user_id text,
    feishu_open_id text,
    email          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX org_members_tenant_name_idx ON org_members (tenant_id, lower(name));

CREATE TABLE agent_member_relationships (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id    uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    member_id   uuid NOT NULL REFERENCES org_members (id) ON DELETE CASCADE,
    relation    text NOT NULL DEFAULT 'collaborator' CHECK (length(relation) BETWEEN 1 AND 50),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, member_id)
);

CREATE TABLE agent_agent_relationships (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id        uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    relation        text NOT NULL DEFAULT 'collaborator' CHECK (length(relation) BETWEEN 1 AND 50),
    description     text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, target_agent_id),
    CHECK (agent_id <> target_agent_id)
);

-- Feishu/Lark apps: one per agent, or the tenant's default (agent_id NULL).
CREATE TABLE channel_configs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id     uuid REFERENCES agents (id) ON DELETE CASCADE,
    channel_type text NOT NULL CHECK (channel_type IN ('feishu', 'lark')),
    app_id       text NOT NULL CHECK (length(app_id) BETWEEN 1 AND 255),
    app_secret   text NOT NULL, -- never returned
    base_url     text NOT NULL CHECK (base_url ~ '^https?://'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX channel_configs_agent_uq ON channel_configs (agent_id, channel_type)
    WHERE agent_id IS NOT NULL;
CREATE UNIQUE INDEX channel_configs_tenant_default_uq ON channel_configs (tenant_id, channel_type)
    WHERE agent_id IS NULL;

-- A conversation between two agents is one, whoever started it: the pair is stored in
-- order (agent_low < agent_high), so two first messages at once meet the same unique key.
CREATE TABLE conversations (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('agent_agent', 'agent_member', 'hook')),
    agent_low  uuid REFERENCES agents (id) ON DELETE CASCADE,
    agent_high uuid REFERENCES agents (id) ON DELETE CASCADE,
    member_id  uuid REFERENCES org_members (id) ON DELETE CASCADE,
    session_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'agent_agent' OR (agent_low IS NOT NULL AND agent_high IS NOT NULL
                                     AND agent_low < agent_high))
);
CREATE UNIQUE INDEX conversations_agent_pair_uq ON conversations (tenant_id, agent_low, agent_high)
    WHERE kind = 'agent_agent';
CREATE UNIQUE INDEX conversations_agent_member_uq ON conversations (tenant_id, agent_low, member_id)
    WHERE kind = 'agent_member';
CREATE UNIQUE INDEX conversations_session_key_uq ON conversations (tenant_id, session_key)
    WHERE session_key IS NOT NULL;

-- Chat history. The id is derived from the event that wrote the row, so a redelivered
-- event writes nothing twice.
CREATE TABLE chat_messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    sender_agent_id  uuid REFERENCES agents (id) ON DELETE SET NULL,
    sender_member_id uuid REFERENCES org_members (id) ON DELETE SET NULL,
    sender_name      text NOT NULL,
    content          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_conversation_idx ON chat_messages (conversation_id, created_at);

-- The inbox of OpenClaw agents. A poll leases pending rows (FOR UPDATE SKIP LOCKED, so two
-- polls never take the same row); a lease that runs out makes the row pending again; a
-- report completes it. The id is the event id, so the dispatcher writes each row once.
CREATE TABLE gateway_messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id         uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    sender_agent_id  uuid REFERENCES agents (id) ON DELETE SET NULL,
    sender_member_id uuid REFERENCES org_members (id) ON DELETE SET NULL,
    sender_name      text NOT NULL,
    conversation_id  uuid REFERENCES conversations (id) ON DELETE SET NULL,
    content          text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'leased', 'completed')),
    lease_until      timestamptz,
    delivery_count   integer NOT NULL DEFAULT 0,
    result           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    completed_at     timestamptz
);
CREATE INDEX gateway_messages_inbox_idx ON gateway_messages (agent_id, created_at)
    WHERE status <> 'completed';

-- send-message with a message_id: the first send with an id is remembered, so a retry is
-- the same event and a different message under a used id is refused (409).
CREATE TABLE gateway_sends (
    agent_id       uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    message_id     text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 128),
    event_id       uuid NOT NULL,
    target_id      uuid NOT NULL,
    content_sha256 text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, message_id)
);
