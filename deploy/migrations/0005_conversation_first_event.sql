-- The event that created a conversation: the dispatcher publishes agentbus.session.started
-- when the message it routes is that event, so a redelivered first message (the row
-- committed, the event not yet published) still starts the session, and once.
ALTER TABLE conversations ADD COLUMN first_event_id uuid;
