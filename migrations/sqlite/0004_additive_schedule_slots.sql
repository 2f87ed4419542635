-- Schedule slots (DESIGN §10): a slot is claimed by inserting its row, unique per (schedule,
-- instant), in the same transaction as its run row, so N replicas ticking together make one run.
-- A takeover (the claimer died) adds a run row linked to the same slot; at most one run of a slot
-- is `running` at a time. held_reason: its run stopped for a person (exit 5), no takeover.
-- Additive: older binaries never read it and insert runs with slot_id NULL.
CREATE TABLE schedule_slot (
    id          INTEGER PRIMARY KEY,
    schedule    TEXT    NOT NULL,
    slot_at     TEXT    NOT NULL, -- UTC, fixed-width text (sorts as it compares)
    as_of       TEXT    NOT NULL, -- the slot's business date
    claimed_by  TEXT    NOT NULL, -- host:pid, for people
    claimed_at  TEXT    NOT NULL,
    held_reason TEXT,
    UNIQUE (schedule, slot_at)
) STRICT;
CREATE INDEX schedule_slot_as_of ON schedule_slot (schedule, as_of);

ALTER TABLE run ADD COLUMN slot_id INTEGER REFERENCES schedule_slot (id) ON DELETE SET NULL;
CREATE UNIQUE INDEX run_one_running_per_slot ON run (slot_id) WHERE status = 'running' AND slot_id IS NOT NULL;
CREATE INDEX run_as_of ON run (as_of, scope, status);
CREATE INDEX card_application_pending_age ON card_application (created_at) WHERE payment_state = 'PENDING_PAYMENT';
