-- Schema v6: no change to what is stored. SQLite keeps its claims in node order and checks a
-- claim of a whole node with a simpler query (006_claims_by_node.sqlite.sql); PostgreSQL is
-- unchanged. This file only records the version.
SELECT 1;
