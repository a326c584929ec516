-- Schema v5: no change to the tables. PostgreSQL's checks of claims and ledger entries run fewer
-- times (005_checks_per_statement.postgres.sql); SQLite's are unchanged. This file only records
-- the version.
SELECT 1;
