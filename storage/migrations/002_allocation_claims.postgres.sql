-- PostgreSQL's half of the rule of 002_allocation_claims.sql: no node has more GPUs claimed at
-- any instant than it has (the smallest node_gpus among the claims on it at that instant).
--
-- A constraint trigger, deferred to the commit, so the rule holds for what a transaction leaves
-- and not for the order of its statements. The sum of the claims on a node is a step function
-- that rises only where a claim starts, so it is enough to look at the starts of claims; a new or
-- changed claim can only push the sum over at a start inside its own interval. Violations are
-- check_violation (SQLSTATE 23514) naming the node, the first such instant, and the GPUs.

CREATE FUNCTION allocation_claims_refuse_oversold() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  at_us BIGINT;
  claimed BIGINT;
  capacity INTEGER;
BEGIN
  SELECT t.from_us, SUM(o.gpus), MIN(o.node_gpus) INTO at_us, claimed, capacity
  FROM allocation_claims AS t
  JOIN allocation_claims AS o
    ON o.node_id = t.node_id AND o.from_us <= t.from_us AND t.from_us < o.until_us
  WHERE t.node_id = NEW.node_id AND t.from_us >= NEW.from_us AND t.from_us < NEW.until_us
  GROUP BY t.allocation_id, t.from_us
  HAVING SUM(o.gpus) > MIN(o.node_gpus)
  ORDER BY t.from_us
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'oversold: node % would have % GPUs claimed at % but has %',
      NEW.node_id, claimed,
      to_char(to_timestamp(at_us / 1000000.0) AT TIME ZONE 'UTC',
              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      capacity
      USING ERRCODE = 'check_violation', CONSTRAINT = 'allocation_claims_refuse_oversold';
  END IF;
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER allocation_claims_refuse_oversold
AFTER INSERT OR UPDATE ON allocation_claims
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION allocation_claims_refuse_oversold();
