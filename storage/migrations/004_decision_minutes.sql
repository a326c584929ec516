-- Schema v4: the market's decisions per minute (storage/store.h, DecisionMinuteRow), so that
-- GetMarketStats' requests, grants, rejections and decision latencies survive a restart.
--
-- `minute` is unix seconds / 60; `counts` is the broker's encoding of that minute's counts
-- (broker/market.cc, EncodeDecisionCounts), opaque to the store. A row is replaced whenever its
-- minute's counts change. (BLOB is a domain over BYTEA on PostgreSQL: see 001_initial.sql.)

CREATE TABLE decision_minutes (
  minute BIGINT PRIMARY KEY,
  counts BLOB   NOT NULL
);
