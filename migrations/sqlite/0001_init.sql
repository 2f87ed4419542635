-- Card base, wallets and the renewal worker's own records (DESIGN §3).
-- Money is INTEGER in the smallest unit (KRW has no minor unit). Dates are ISO-8601 TEXT.
-- STRICT tables: a value of the wrong type is rejected on write, never met as a bad row on read.

CREATE TABLE member (
    id             INTEGER PRIMARY KEY,
    name           TEXT,
    mobile         TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('ACTIVE', 'DORMANT', 'CANCELLED')),
    address        TEXT,
    address_detail TEXT,
    zip_code       TEXT
) STRICT;

CREATE TABLE wallet (
    id        INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL UNIQUE REFERENCES member (id),
    balance   INTEGER NOT NULL CHECK (balance >= 0)
) STRICT;

CREATE TABLE card_product (
    id                    INTEGER PRIMARY KEY,
    name                  TEXT    NOT NULL,
    card_type             TEXT    NOT NULL CHECK (card_type IN ('MOBILE', 'PHYSICAL')),
    allows_expiry_reissue INTEGER NOT NULL CHECK (allows_expiry_reissue IN (0, 1)),
    reissue_fee           INTEGER NOT NULL CHECK (reissue_fee >= 0),
    validity_months       INTEGER CHECK (validity_months > 0)
) STRICT;

CREATE TABLE card (
    id                         INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 999999999999), -- fits a cardApplyNo
    card_no                    TEXT    NOT NULL UNIQUE,
    member_id                  INTEGER NOT NULL REFERENCES member (id),
    product_id                 INTEGER NOT NULL REFERENCES card_product (id),
    status                     TEXT    NOT NULL,
    expiry_ym                  INTEGER NOT NULL, -- YYYYMM; the card expires at the end of that month
    par                        TEXT,
    -- The reissued marker: the application that replaced this card. UNIQUE: one card per application.
    replaced_by_application_id INTEGER UNIQUE REFERENCES card_application (id),
    reissued_at                TEXT
) STRICT;

-- The nightly scan: seek each window month, walk card ids in order, only cards not yet reissued.
CREATE INDEX card_expiry_unreissued ON card (expiry_ym, id) WHERE replaced_by_application_id IS NULL;

CREATE TABLE card_application (
    id                      INTEGER PRIMARY KEY,
    card_apply_no           TEXT    NOT NULL UNIQUE CHECK (length(card_apply_no) = 22),
    kind                    TEXT    NOT NULL CHECK (kind IN ('EXPIRY_REISSUE')),
    old_card_id             INTEGER NOT NULL REFERENCES card (id),
    member_id               INTEGER NOT NULL REFERENCES member (id),
    product_id              INTEGER NOT NULL REFERENCES card_product (id),
    delivery_address        TEXT    NOT NULL,
    delivery_address_detail TEXT    NOT NULL,
    delivery_zip_code       TEXT    NOT NULL,
    fee                     INTEGER NOT NULL CHECK (fee >= 0),
    new_expiry_ym           INTEGER NOT NULL,
    payment_state           TEXT    NOT NULL CHECK (payment_state IN ('PENDING_PAYMENT', 'APPLIED', 'CANCELLED')),
    delivery_status         TEXT    NOT NULL DEFAULT 'READY' CHECK (delivery_status IN
                                ('READY', 'RECEIPT', 'PRE_SHIPPING', 'SHIPPING', 'ARRIVAL', 'LOST', 'RETURN', 'CANCEL', 'ETC')),
    correlation_id          TEXT    NOT NULL CHECK (length(correlation_id) = 20),
    run_id                  INTEGER REFERENCES run (id),
    created_at              TEXT    NOT NULL,
    updated_at              TEXT    NOT NULL
) STRICT;

-- Exactly once: at most one live (not cancelled) expiry-reissue application per card, whatever the code does.
CREATE UNIQUE INDEX card_application_one_live_per_card
    ON card_application (old_card_id) WHERE kind = 'EXPIRY_REISSUE' AND payment_state <> 'CANCELLED';
CREATE INDEX card_application_by_card ON card_application (old_card_id);

-- The fee ledger. application_id UNIQUE: one debit per application; reference UNIQUE: one per cardApplyNo.
CREATE TABLE wallet_debit (
    id             INTEGER PRIMARY KEY,
    wallet_id      INTEGER NOT NULL REFERENCES wallet (id),
    application_id INTEGER NOT NULL UNIQUE REFERENCES card_application (id),
    reference      TEXT    NOT NULL UNIQUE,
    amount         INTEGER NOT NULL CHECK (amount > 0),
    created_at     TEXT    NOT NULL
) STRICT;

CREATE TABLE run (
    id          INTEGER PRIMARY KEY,
    as_of       TEXT    NOT NULL,
    trigger     TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'api')),
    scope       TEXT    NOT NULL CHECK (scope IN ('full', 'card', 'limit')),
    params      TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted', 'failed_dependency')),
    reason      TEXT,
    owner       TEXT    NOT NULL, -- host:pid, for people; liveness is the lock file
    lock_token  TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    fee_mode    TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    read_count       INTEGER NOT NULL DEFAULT 0,
    reissued_count   INTEGER NOT NULL DEFAULT 0,
    ineligible_count INTEGER NOT NULL DEFAULT 0,
    failed_count     INTEGER NOT NULL DEFAULT 0,
    fee_total        INTEGER NOT NULL DEFAULT 0,
    counts           TEXT    NOT NULL DEFAULT '{}' -- {"000_000": {"count": n, "fee": f}, ...}
) STRICT;
CREATE INDEX run_status ON run (status);

CREATE TABLE result (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES run (id),
    card_id        INTEGER NOT NULL REFERENCES card (id),
    as_of          TEXT    NOT NULL,
    code           TEXT    NOT NULL,
    message        TEXT    NOT NULL,
    fee            INTEGER NOT NULL DEFAULT 0,
    card_apply_no  TEXT,
    correlation_id TEXT    NOT NULL,
    created_at     TEXT    NOT NULL
) STRICT;
-- "Has this card a result for this as-of?" (the once-per-as-of rule) and per-run reports.
CREATE INDEX result_card_as_of ON result (card_id, as_of);
CREATE INDEX result_run_code ON result (run_id, code);
CREATE INDEX result_created_at ON result (created_at);
