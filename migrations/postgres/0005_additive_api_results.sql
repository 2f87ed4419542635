-- The sync API (DESIGN §10): its results are result rows with trigger 'api' and no run row
-- (run_id NULL). Batch results keep trigger 'run'; the batch's once-per-as-of rule reads only
-- those (index result_card_as_of_run), so an API request never makes the batch skip a card.
-- Additive: older binaries still write run_id and never read trigger.
ALTER TABLE result ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE result ADD COLUMN trigger TEXT NOT NULL DEFAULT 'run' CHECK (trigger IN ('run', 'api'));
-- NOT VALID, then validated: the scan of existing rows runs without blocking writers.
ALTER TABLE result ADD CONSTRAINT result_run_or_api CHECK ((trigger = 'run') = (run_id IS NOT NULL)) NOT VALID;
ALTER TABLE result VALIDATE CONSTRAINT result_run_or_api;
CREATE INDEX result_card_as_of_run ON result (card_id, as_of) WHERE trigger = 'run';
CREATE INDEX result_api_as_of ON result (as_of, code) WHERE trigger = 'api';

-- Idempotency-Key (the API): the first final answer to (calling key, Idempotency-Key), kept
-- until expires_at. status NULL: the first request is still being answered (a duplicate waits);
-- application_id: its fee's outcome was unknown (503), a repeat settles and answers it.
CREATE TABLE idempotency_key (
    api_key_id     TEXT        NOT NULL,
    key            TEXT        NOT NULL,
    body_hash      TEXT        NOT NULL,
    status         BIGINT,
    response       TEXT,
    correlation_id TEXT,
    application_id BIGINT REFERENCES card_application (id),
    claim_token    TEXT        NOT NULL, -- the request answering for the key; only it may answer
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_key_expires ON idempotency_key (expires_at);
