-- SQLite's claims, stored for the oversell rule's lookups (002_allocation_claims.sql), which
-- are all by node and instant: the table itself is kept in (node_id, from_us) order (WITHOUT
-- ROWID), instead of a rowid table plus an index of (node_id, from_us) plus the index of its
-- primary key. The claims of one allocation (which the broker deletes and rewrites together) are
-- found through the UNIQUE (allocation_id, node_id) index, which keeps that pair unique as the
-- primary key did. The columns, their checks and the foreign key are those of 002.
--
-- The rule is unchanged; its trigger now has two halves. A claim of a whole node (gpus equal to
-- node_gpus) pushes the node over exactly when another claim on the node overlaps it in time:
-- then the two together take more GPUs than the node has, and where nothing else overlaps it the
-- claim alone fits. So it is checked with one range lookup of the node's claims. A claim of part
-- of a node is checked as before, at every start of a claim inside its interval.

CREATE TABLE allocation_claims_v6 (
  allocation_id BIGINT   NOT NULL REFERENCES allocations (id),
  node_id       TEXT     NOT NULL CHECK (node_id <> ''),
  node_gpus     INTEGER  NOT NULL CHECK (node_gpus > 0),
  gpus          INTEGER  NOT NULL CHECK (gpus > 0 AND gpus <= node_gpus),
  from_us       BIGINT   NOT NULL,
  until_us      BIGINT   NOT NULL CHECK (until_us > from_us),
  PRIMARY KEY (node_id, from_us, allocation_id),
  UNIQUE (allocation_id, node_id)
) WITHOUT ROWID;

INSERT INTO allocation_claims_v6 (allocation_id, node_id, node_gpus, gpus, from_us, until_us)
SELECT allocation_id, node_id, node_gpus, gpus, from_us, until_us FROM allocation_claims;

-- Its index and triggers go with it.
DROP TABLE allocation_claims;
ALTER TABLE allocation_claims_v6 RENAME TO allocation_claims;

CREATE TRIGGER allocation_claims_refuse_oversold_insert_whole AFTER INSERT ON allocation_claims
WHEN NEW.gpus = NEW.node_gpus AND EXISTS (
  SELECT 1
  FROM allocation_claims AS o
  WHERE o.node_id = NEW.node_id AND o.from_us < NEW.until_us AND o.until_us > NEW.from_us
    AND o.allocation_id <> NEW.allocation_id)
BEGIN
  SELECT RAISE(ABORT, 'oversold: the node would have more GPUs claimed at some instant than it has');
END;

CREATE TRIGGER allocation_claims_refuse_oversold_insert_part AFTER INSERT ON allocation_claims
WHEN NEW.gpus < NEW.node_gpus AND EXISTS (
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

CREATE TRIGGER allocation_claims_refuse_oversold_update_whole AFTER UPDATE ON allocation_claims
WHEN NEW.gpus = NEW.node_gpus AND EXISTS (
  SELECT 1
  FROM allocation_claims AS o
  WHERE o.node_id = NEW.node_id AND o.from_us < NEW.until_us AND o.until_us > NEW.from_us
    AND o.allocation_id <> NEW.allocation_id)
BEGIN
  SELECT RAISE(ABORT, 'oversold: the node would have more GPUs claimed at some instant than it has');
END;

CREATE TRIGGER allocation_claims_refuse_oversold_update_part AFTER UPDATE ON allocation_claims
WHEN NEW.gpus < NEW.node_gpus AND EXISTS (
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
