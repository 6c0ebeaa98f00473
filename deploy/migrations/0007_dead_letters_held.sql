-- The notifier counts the dead letters not yet replayed (agentbus_notify_dead_letters_held)
-- every few seconds on every replica: a partial index keeps that count off the payloads.
CREATE INDEX notify_dead_letters_held_idx ON notify_dead_letters (dead_at) WHERE replayed_at IS NULL;
