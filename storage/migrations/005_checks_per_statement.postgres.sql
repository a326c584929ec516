-- PostgreSQL's checks of 002 and 003, run fewer times for the same rules.
--
-- Claims (the rule of 002_allocation_claims.sql). The check of 002_allocation_claims.postgres.sql
-- ran once per claim row, at commit: a plpgsql call and a query for each of the thousands of rows
-- a busy broker writes per second. It now runs once per statement, over the rows the statement
-- wrote (a transition table), with the same query. It runs when the statement ends, not at
-- commit, as SQLite's triggers do: a writer that replaces claims removes the old ones before it
-- inserts the new ones (both backends do), so every state in between holds a subset of the final
-- claims, and a subset of claims that fit fits. Violations are still check_violation (23514)
-- naming the node, the first such instant, and the GPUs.

DROP TRIGGER allocation_claims_refuse_oversold ON allocation_claims;
DROP FUNCTION allocation_claims_refuse_oversold();

-- The planner is told to look claims up by node (the index) rather than to read the whole table:
-- a statement writes a few hundred claims at most, against a table of hundreds of thousands, and
-- statistics of a table that grows fast lag behind.
CREATE FUNCTION allocation_claims_refuse_oversold() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
  node TEXT;
  at_us BIGINT;
  claimed BIGINT;
  capacity INTEGER;
BEGIN
  -- The instants to look at: the starts of claims on a written claim's node inside its interval.
  WITH instants AS (
    SELECT DISTINCT t.node_id, t.from_us
    FROM written AS n
    JOIN allocation_claims AS t
      ON t.node_id = n.node_id AND t.from_us >= n.from_us AND t.from_us < n.until_us)
  SELECT i.node_id, i.from_us, SUM(o.gpus), MIN(o.node_gpus) INTO node, at_us, claimed, capacity
  FROM instants AS i
  JOIN allocation_claims AS o
    ON o.node_id = i.node_id AND o.from_us <= i.from_us AND i.from_us < o.until_us
  GROUP BY i.node_id, i.from_us
  HAVING SUM(o.gpus) > MIN(o.node_gpus)
  ORDER BY i.node_id, i.from_us
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oversold: node % would have % GPUs claimed at % but has %',
      node, claimed,
      to_char(to_timestamp(at_us / 1000000.0) AT TIME ZONE 'UTC',
              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      capacity
      USING ERRCODE = 'check_violation', CONSTRAINT = 'allocation_claims_refuse_oversold';
  END IF;
  RETURN NULL;
END
$$;

-- A trigger with a transition table has one event: one trigger for inserts, one for updates.
CREATE TRIGGER allocation_claims_refuse_oversold
AFTER INSERT ON allocation_claims
REFERENCING NEW TABLE AS written
FOR EACH STATEMENT EXECUTE FUNCTION allocation_claims_refuse_oversold();

CREATE TRIGGER allocation_claims_refuse_oversold_update
AFTER UPDATE ON allocation_claims
REFERENCING NEW TABLE AS written
FOR EACH STATEMENT EXECUTE FUNCTION allocation_claims_refuse_oversold();

-- Ledger (the rules of 003_ledger.sql). The balance check ran for every leg; it now runs for
-- each entry's last leg only, still at commit. That is enough: an entry whose last leg is
-- missing cannot commit (the deferred foreign key), and a leg added to an entry stored before
-- either is a last leg (checked, and refused: two last legs) or collides with a stored leg (the
-- stored entry has legs 0..last_leg, which the check proved when it was written).

DROP TRIGGER ledger_legs_balance ON ledger_legs;

CREATE CONSTRAINT TRIGGER ledger_legs_balance
AFTER INSERT ON ledger_legs
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (NEW.leg = NEW.last_leg)
EXECUTE FUNCTION ledger_legs_balance();
