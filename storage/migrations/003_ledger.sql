-- Schema v3: the double-entry ledger (storage/store.h, LedgerEntryRow; broker/ledger.h).
--
-- One row per leg. Leg `leg` of entry `entry_id` posts `amount_micros` (negative: a debit) to
-- `account`; every leg of an entry repeats the entry's `at_us`, `allocation_id`, `kind` and
-- `last_leg` (the number of legs minus one). Each leg references the entry's last leg through a
-- foreign key deferred to the commit, so an entry whose last leg is missing cannot be committed;
-- each backend's trigger (003_ledger.sqlite.sql, 003_ledger.postgres.sql) checks, when an entry
-- is complete, that it has exactly last_leg + 1 legs summing to 0, and refuses any UPDATE or
-- DELETE: an unbalanced or changed entry cannot be stored. A correction is a new entry.

CREATE TABLE ledger_legs (
  entry_id      BIGINT   NOT NULL CHECK (entry_id > 0),
  leg           INTEGER  NOT NULL CHECK (leg >= 0 AND leg <= last_leg),
  last_leg      INTEGER  NOT NULL,
  at_us         BIGINT   NOT NULL,
  allocation_id BIGINT   NOT NULL,
  kind          INTEGER  NOT NULL,
  account       TEXT     NOT NULL CHECK (account <> ''),
  amount_micros BIGINT   NOT NULL,
  PRIMARY KEY (entry_id, leg),
  UNIQUE (entry_id, account),
  FOREIGN KEY (entry_id, last_leg) REFERENCES ledger_legs (entry_id, leg)
    DEFERRABLE INITIALLY DEFERRED
);

-- Figures read the ledger by time.
CREATE INDEX ledger_legs_by_time ON ledger_legs (at_us);
