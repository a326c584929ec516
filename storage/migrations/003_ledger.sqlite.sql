-- SQLite's half of the rules of 003_ledger.sql. SQLite runs triggers after each row, so the
-- balance is checked when an entry's last leg is inserted (the writer inserts legs in order);
-- a leg of an entry whose last leg is stored already is refused, as is any change.

CREATE TRIGGER ledger_legs_sealed BEFORE INSERT ON ledger_legs
WHEN EXISTS (SELECT 1 FROM ledger_legs WHERE entry_id = NEW.entry_id AND leg = last_leg)
BEGIN
  SELECT RAISE(ABORT, 'ledger: the entry is complete; a correction is a new entry');
END;

CREATE TRIGGER ledger_legs_balance AFTER INSERT ON ledger_legs
WHEN NEW.leg = NEW.last_leg AND (
  (SELECT COUNT(*) FROM ledger_legs WHERE entry_id = NEW.entry_id) <> NEW.last_leg + 1 OR
  (SELECT SUM(amount_micros) FROM ledger_legs WHERE entry_id = NEW.entry_id) <> 0 OR
  EXISTS (SELECT 1 FROM ledger_legs WHERE entry_id = NEW.entry_id AND last_leg <> NEW.last_leg))
BEGIN
  SELECT RAISE(ABORT, 'ledger: unbalanced entry (its legs must sum to 0)');
END;

CREATE TRIGGER ledger_legs_no_update BEFORE UPDATE ON ledger_legs
BEGIN
  SELECT RAISE(ABORT, 'ledger: entries are immutable');
END;

CREATE TRIGGER ledger_legs_no_delete BEFORE DELETE ON ledger_legs
BEGIN
  SELECT RAISE(ABORT, 'ledger: entries are immutable');
END;
