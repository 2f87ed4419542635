-- The sync API (DESIGN §10): its results are result rows with trigger 'api' and no run row
-- (run_id NULL). Batch results keep trigger 'run'; the batch's once-per-as-of rule reads only
-- those (index result_card_as_of_run), so an API request never makes the batch skip a card.
-- Additive: older binaries still write run_id and never read trigger. SQLite cannot relax NOT
-- NULL in place, so the table is rebuilt in this migration's transaction.
CREATE TABLE result_v5 (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER REFERENCES run (id),
    card_id        INTEGER NOT NULL REFERENCES card (id),
    as_of          TEXT    NOT NULL,
    code           TEXT    NOT NULL,
    message        TEXT    NOT NULL,
    fee            INTEGER NOT NULL DEFAULT 0,
    card_apply_no  TEXT,
    correlation_id TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    trigger        TEXT    NOT NULL DEFAULT 'run' CHECK (trigger IN ('run', 'api')),
    CHECK ((trigger = 'run') = (run_id IS NOT NULL))
) STRICT;
INSERT INTO result_v5 (id, run_id, card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at)
    SELECT id, run_id, card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at FROM result;
DROP TABLE result;
ALTER TABLE result_v5 RENAME TO result;
CREATE INDEX result_card_as_of ON result (card_id, as_of);
CREATE INDEX result_run_code ON result (run_id, code);
CREATE INDEX result_created_at ON result (created_at);
CREATE INDEX result_card_as_of_run ON result (card_id, as_of) WHERE trigger = 'run';
CREATE INDEX result_api_as_of ON result (as_of, code) WHERE trigger = 'api';

-- Idempotency-Key (the API): the first final answer to (calling key, Idempotency-Key), kept
-- until expires_at. status NULL: the first request is still being answered (a duplicate waits);
-- application_id: its fee's outcome was unknown (503), a repeat settles and answers it.
CREATE TABLE idempotency_key (
    api_key_id     TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    body_hash      TEXT    NOT NULL,
    status         INTEGER,
    response       TEXT,
    correlation_id TEXT,
    application_id INTEGER REFERENCES card_application (id),
    claim_token    TEXT    NOT NULL, -- the request answering for the key; only it may answer
    created_at     TEXT    NOT NULL,
    expires_at     TEXT    NOT NULL,
    PRIMARY KEY (api_key_id, key)
) STRICT;
CREATE INDEX idempotency_key_expires ON idempotency_key (expires_at);
