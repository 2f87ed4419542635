-- HTTP fee mode: the payment service's reference for a charge, and reservations still unsettled.
ALTER TABLE card_application ADD COLUMN payment_ref TEXT;
ALTER TABLE run ADD COLUMN pending_count INTEGER NOT NULL DEFAULT 0;
CREATE INDEX card_application_pending ON card_application (member_id, old_card_id) WHERE payment_state = 'PENDING_PAYMENT';
