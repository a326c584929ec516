-- PostgreSQL's half of the rules of 003_ledger.sql: a constraint trigger deferred to the commit
-- checks every entry a transaction wrote (exactly last_leg + 1 legs, one last_leg, summing to 0),
-- and any UPDATE or DELETE is refused. Violations are integrity_constraint_violation (23000).

CREATE FUNCTION ledger_legs_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  n BIGINT;
  total NUMERIC;
  lasts BIGINT;
BEGIN
  SELECT COUNT(*), SUM(amount_micros), COUNT(DISTINCT last_leg) INTO n, total, lasts
  FROM ledger_legs WHERE entry_id = NEW.entry_id;
  IF lasts <> 1 OR n <> NEW.last_leg + 1 OR total <> 0 THEN
    RAISE EXCEPTION 'ledger: entry % is unbalanced or incomplete (% legs summing to %)',
      NEW.entry_id, n, total
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_legs_balance';
  END IF;
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_legs_balance
AFTER INSERT ON ledger_legs
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION ledger_legs_balance();

CREATE FUNCTION ledger_legs_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger: entries are immutable; a correction is a new entry'
    USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER ledger_legs_immutable
BEFORE UPDATE OR DELETE ON ledger_legs
FOR EACH ROW EXECUTE FUNCTION ledger_legs_immutable();
