-- Schema v2: what each live allocation takes on each node, so that the database itself refuses
-- to store an oversold node (storage/store.h, ClaimRow).
--
-- A claim says: allocation `allocation_id` takes `gpus` of the `node_gpus` GPUs of node `node_id`
-- over [from_us, until_us). Only live allocations (held, reserved or active) have claims; the
-- backend replaces an allocation's claims whenever it writes the allocation. The rule "at no
-- instant do a node's claims add up to more GPUs than the node has" spans rows, so a CHECK cannot
-- state it: each backend adds a trigger for it (002_allocation_claims.sqlite.sql and
-- 002_allocation_claims.postgres.sql).

CREATE TABLE allocation_claims (
  allocation_id BIGINT   NOT NULL REFERENCES allocations (id),
  node_id       TEXT     NOT NULL CHECK (node_id <> ''),
  node_gpus     INTEGER  NOT NULL CHECK (node_gpus > 0),   -- the GPUs the node has
  gpus          INTEGER  NOT NULL CHECK (gpus > 0 AND gpus <= node_gpus),
  from_us       BIGINT   NOT NULL,
  until_us      BIGINT   NOT NULL CHECK (until_us > from_us),
  PRIMARY KEY (allocation_id, node_id)
);

-- The trigger looks up the claims on one node around an instant.
CREATE INDEX allocation_claims_by_node ON allocation_claims (node_id, from_us);
