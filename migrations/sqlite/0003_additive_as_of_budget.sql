-- Blast-radius limits count per as-of over all of its runs (DESIGN §10): a chunk adds its reissues
-- and fees here in its own transaction when a limit is set, so a retry or a second replica adds
-- to the same totals instead of starting from zero. Additive: older binaries never read it.
CREATE TABLE as_of_budget (
    as_of     TEXT    PRIMARY KEY,
    reissued  INTEGER NOT NULL DEFAULT 0,
    fee_total INTEGER NOT NULL DEFAULT 0
) STRICT;
