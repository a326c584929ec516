-- SQLite's half of the rule of 002_allocation_claims.sql: no node has more GPUs claimed at any
-- instant than it has (the smallest node_gpus among the claims on it at that instant).
--
-- The sum of the claims on a node is a step function that rises only where a claim starts, so it
-- is enough to look at the starts of claims. A new or changed claim can only push the sum over at
-- a start inside its own interval, so each trigger looks there. SQLite runs triggers after each
-- row, not at commit: a backend writing a batch removes the claims it replaces before it inserts
-- the new ones, so every state in between holds a subset of the final claims.

CREATE TRIGGER allocation_claims_refuse_oversold_insert AFTER INSERT ON allocation_claims
WHEN EXISTS (
  SELECT 1
  FROM allocation_claims AS t
  JOIN allocation_claims AS o
    ON o.node_id = t.node_id AND o.from_us <= t.from_us AND t.from_us < o.until_us
  WHERE t.node_id = NEW.node_id AND t.from_us >= NEW.from_us AND t.from_us < NEW.until_us
  GROUP BY t.allocation_id
  HAVING SUM(o.gpus) > MIN(o.node_gpus))
BEGIN
  SELECT RAISE(ABORT, 'oversold: the node would have more GPUs claimed at some instant than it has');
END;

CREATE TRIGGER allocation_claims_refuse_oversold_update AFTER UPDATE ON allocation_claims
WHEN EXISTS (
  SELECT 1
  FROM allocation_claims AS t
  JOIN allocation_claims AS o
    ON o.node_id = t.node_id AND o.from_us <= t.from_us AND t.from_us < o.until_us
  WHERE t.node_id = NEW.node_id AND t.from_us >= NEW.from_us AND t.from_us < NEW.until_us
  GROUP BY t.allocation_id
  HAVING SUM(o.gpus) > MIN(o.node_gpus))
BEGIN
  SELECT RAISE(ABORT, 'oversold: the node would have more GPUs claimed at some instant than it has');
END;
