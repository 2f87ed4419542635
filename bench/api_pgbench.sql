-- pgbench: the API's own statements for one card (read with its wallet lock, claim, debit, mark,
-- result) in one transaction, each client taking the next eligible card through a sequence:
-- the PostgreSQL limit for the API's success path. Run by the bench's API cell:
--   pgbench -n -M prepared -c 16 -j 2 -T 10 -f bench/api_pgbench.sql <database>
SELECT nextval('bench_api_seq') AS i \gset
SELECT card_id, member_id, product_id, fee FROM bench_api_cards WHERE i = :i \gset
BEGIN;
SELECT c.id, c.status, c.expiry_ym, c.par, m.status AS member_status, m.name, m.mobile, w.balance,
       p.allows_expiry_reissue, p.reissue_fee, p.validity_months
  FROM card c JOIN member m ON m.id = c.member_id JOIN card_product p ON p.id = c.product_id
  JOIN wallet w ON w.member_id = m.id
 WHERE c.id = :card_id
   FOR UPDATE OF w;
INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, delivery_address,
       delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, payment_state, correlation_id,
       created_at, updated_at)
VALUES ('8' || lpad(:card_id::text, 21, '0'), 'EXPIRY_REISSUE', :card_id, :member_id, :product_id,
       '77 Teheran-ro, Seoul', '5F', '06164', :fee, 203112, 'APPLIED', '261201120000-0abcdef', now(), now())
ON CONFLICT DO NOTHING
RETURNING id AS application_id \gset
UPDATE wallet SET balance = balance - :fee WHERE member_id = :member_id AND balance >= :fee AND :fee > 0;
INSERT INTO wallet_debit (wallet_id, application_id, reference, amount, created_at)
SELECT w.id, :application_id, '8' || lpad(:card_id::text, 21, '0'), :fee, now() FROM wallet w
 WHERE w.member_id = :member_id AND :fee > 0;
UPDATE card SET replaced_by_application_id = :application_id, reissued_at = now() WHERE id = :card_id;
INSERT INTO result (card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at, trigger)
VALUES (:card_id, current_date, '000_000', 'Success', :fee, '8' || lpad(:card_id::text, 21, '0'),
        '261201120000-0abcdef', now(), 'api');
COMMIT;
