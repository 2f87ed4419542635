-- Card base, wallets and the renewal worker's own records (DESIGN §3), PostgreSQL dialect.
-- Money is BIGINT in the smallest unit (KRW has no minor unit).

CREATE TABLE member (
    id             BIGINT PRIMARY KEY,
    name           TEXT,
    mobile         TEXT,
    status         TEXT NOT NULL CHECK (status IN ('ACTIVE', 'DORMANT', 'CANCELLED')),
    address        TEXT,
    address_detail TEXT,
    zip_code       TEXT
);

CREATE TABLE wallet (
    id        BIGSERIAL PRIMARY KEY,
    member_id BIGINT NOT NULL UNIQUE REFERENCES member (id),
    balance   BIGINT NOT NULL CHECK (balance >= 0)
);

CREATE TABLE card_product (
    id                    BIGINT PRIMARY KEY,
    name                  TEXT    NOT NULL,
    card_type             TEXT    NOT NULL CHECK (card_type IN ('MOBILE', 'PHYSICAL')),
    allows_expiry_reissue BOOLEAN NOT NULL,
    reissue_fee           BIGINT  NOT NULL CHECK (reissue_fee >= 0),
    validity_months       INTEGER CHECK (validity_months > 0)
);

-- fillfactor leaves room on each page so marking a card can stay a HOT update.
CREATE TABLE card (
    id                         BIGINT PRIMARY KEY CHECK (id BETWEEN 1 AND 999999999999), -- fits a cardApplyNo
    card_no                    TEXT    NOT NULL UNIQUE,
    member_id                  BIGINT  NOT NULL REFERENCES member (id),
    product_id                 BIGINT  NOT NULL REFERENCES card_product (id),
    status                     TEXT    NOT NULL,
    expiry_ym                  INTEGER NOT NULL, -- YYYYMM; the card expires at the end of that month
    par                        TEXT,
    replaced_by_application_id BIGINT UNIQUE,    -- the reissued marker
    reissued_at                TIMESTAMPTZ
) WITH (fillfactor = 90);

-- The nightly scan: seek each window month, walk members (the unit of work) then cards in order.
CREATE INDEX card_expiry_unreissued ON card (expiry_ym, member_id, id) WHERE replaced_by_application_id IS NULL;
CREATE INDEX card_member ON card (member_id);

CREATE TABLE run (
    id               BIGSERIAL PRIMARY KEY,
    as_of            DATE        NOT NULL,
    trigger          TEXT        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'api')),
    scope            TEXT        NOT NULL CHECK (scope IN ('full', 'card', 'limit')),
    params           JSONB       NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted', 'failed_dependency')),
    reason           TEXT,
    owner            TEXT        NOT NULL, -- host:pid, for people; liveness is the advisory lock
    lock_token       TEXT        NOT NULL,
    version          TEXT        NOT NULL,
    fee_mode         TEXT        NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    read_count       BIGINT      NOT NULL DEFAULT 0,
    reissued_count   BIGINT      NOT NULL DEFAULT 0,
    ineligible_count BIGINT      NOT NULL DEFAULT 0,
    failed_count     BIGINT      NOT NULL DEFAULT 0,
    fee_total        BIGINT      NOT NULL DEFAULT 0,
    counts           JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX run_status ON run (status);

CREATE TABLE card_application (
    id                      BIGSERIAL PRIMARY KEY,
    card_apply_no           TEXT        NOT NULL UNIQUE CHECK (char_length(card_apply_no) = 22),
    kind                    TEXT        NOT NULL CHECK (kind IN ('EXPIRY_REISSUE')),
    old_card_id             BIGINT      NOT NULL REFERENCES card (id),
    member_id               BIGINT      NOT NULL REFERENCES member (id),
    product_id              BIGINT      NOT NULL REFERENCES card_product (id),
    delivery_address        TEXT        NOT NULL,
    delivery_address_detail TEXT        NOT NULL,
    delivery_zip_code       TEXT        NOT NULL,
    fee                     BIGINT      NOT NULL CHECK (fee >= 0),
    new_expiry_ym           INTEGER     NOT NULL,
    payment_state           TEXT        NOT NULL CHECK (payment_state IN ('PENDING_PAYMENT', 'APPLIED', 'CANCELLED')),
    delivery_status         TEXT        NOT NULL DEFAULT 'READY' CHECK (delivery_status IN
                                ('READY', 'RECEIPT', 'PRE_SHIPPING', 'SHIPPING', 'ARRIVAL', 'LOST', 'RETURN', 'CANCEL', 'ETC')),
    correlation_id          TEXT        NOT NULL CHECK (char_length(correlation_id) = 20),
    run_id                  BIGINT REFERENCES run (id),
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);

ALTER TABLE card ADD CONSTRAINT card_replaced_by_application_fk
    FOREIGN KEY (replaced_by_application_id) REFERENCES card_application (id);

-- Exactly once: at most one live (not cancelled) expiry-reissue application per card.
CREATE UNIQUE INDEX card_application_one_live_per_card
    ON card_application (old_card_id) WHERE kind = 'EXPIRY_REISSUE' AND payment_state <> 'CANCELLED';
CREATE INDEX card_application_by_card ON card_application (old_card_id);

-- The fee ledger. application_id UNIQUE: one debit per application; reference UNIQUE: one per cardApplyNo.
CREATE TABLE wallet_debit (
    id             BIGSERIAL PRIMARY KEY,
    wallet_id      BIGINT      NOT NULL REFERENCES wallet (id),
    application_id BIGINT      NOT NULL UNIQUE REFERENCES card_application (id),
    reference      TEXT        NOT NULL UNIQUE,
    amount         BIGINT      NOT NULL CHECK (amount > 0),
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE result (
    id             BIGSERIAL PRIMARY KEY,
    run_id         BIGINT      NOT NULL REFERENCES run (id),
    card_id        BIGINT      NOT NULL REFERENCES card (id),
    as_of          DATE        NOT NULL,
    code           TEXT        NOT NULL,
    message        TEXT        NOT NULL,
    fee            BIGINT      NOT NULL DEFAULT 0,
    card_apply_no  TEXT,
    correlation_id TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX result_card_as_of ON result (card_id, as_of);
CREATE INDEX result_run_code ON result (run_id, code);
CREATE INDEX result_created_at ON result (created_at);
