-- Schema v1 of the Suanli store: accounts, API keys, the capacity journal, allocations and
-- idempotency records (storage/store.h says what each holds).
--
-- Shared by the SQLite and PostgreSQL backends, so only SQL both accept is used. The one known
-- difference: binary columns are declared BLOB, which PostgreSQL lacks (it calls the type BYTEA);
-- the PostgreSQL backend creates `CREATE DOMAIN blob AS BYTEA` before it applies the first
-- migration, so this file runs there unchanged.
--
-- Conventions: times are BIGINT microseconds since the Unix epoch (columns named *_us; the
-- largest and smallest BIGINT stand for an infinite future and past). Booleans are SMALLINT 0/1.
-- Every column is NOT NULL: an absent value is stored as its zero (0, '' or an empty blob).
-- SQLite needs NOT NULL spelled out even on PRIMARY KEY columns.

CREATE TABLE accounts (
  id          TEXT     NOT NULL PRIMARY KEY,
  role        INTEGER  NOT NULL,              -- suanli.v1.Role
  name        TEXT     NOT NULL UNIQUE,
  created_us  BIGINT   NOT NULL
);

-- Keys only as a hash of their secret. A key belongs to a stored account.
CREATE TABLE api_keys (
  key_id      TEXT     NOT NULL PRIMARY KEY,  -- the public part of the key
  account_id  TEXT     NOT NULL REFERENCES accounts (id),
  secret_hash BLOB     NOT NULL,              -- SHA-256 of the secret, 32 raw bytes
  created_us  BIGINT   NOT NULL,
  revoked     SMALLINT NOT NULL CHECK (revoked IN (0, 1))
);

-- Every call that changed capacity, replayed in seq order at start. That a new seq is above
-- every stored one is checked by the backend inside the writing transaction (a constraint can
-- only see one row); the primary key and the CHECK back it up.
CREATE TABLE capacity_journal (
  seq         BIGINT   NOT NULL PRIMARY KEY CHECK (seq > 0),
  kind        INTEGER  NOT NULL,              -- the broker's numbering of capacity calls
  actor       TEXT     NOT NULL,              -- the account that made the call
  at_us       BIGINT   NOT NULL,              -- when it was applied
  payload     BLOB     NOT NULL               -- the serialized request
);

-- Every allocation ever granted or held, ended ones included.
CREATE TABLE allocations (
  id          BIGINT   NOT NULL PRIMARY KEY CHECK (id > 0),
  buyer_id    TEXT     NOT NULL,
  state       INTEGER  NOT NULL,              -- suanli.v1.AllocationState
  payload     BLOB     NOT NULL,              -- serialized suanli.v1.Allocation
  held_end_us BIGINT   NOT NULL,              -- a held allocation: the end of the interval held
  offer_ids   TEXT     NOT NULL               -- the offer of each slice, comma-separated
);

-- The first answer to an Allocate with an idempotency key; the primary key makes a key unique
-- per buyer.
CREATE TABLE idempotency (
  buyer_id      TEXT   NOT NULL,
  idem_key      TEXT   NOT NULL,
  request       BLOB   NOT NULL,              -- serialized suanli.v1.AllocateRequest
  allocation_id BIGINT NOT NULL CHECK (allocation_id >= 0),  -- 0 when rejected
  rejection     BLOB   NOT NULL,              -- serialized suanli.v1.Rejection, or empty
  PRIMARY KEY (buyer_id, idem_key)
);
