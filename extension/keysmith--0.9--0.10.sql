-- extension/keysmith--0.9--0.10.sql
--
-- keysmith 0.10: trust, second round (docs/security.md).  Code a secret's
-- or a column's owner supplies runs in a process of its own, as that
-- owner, under deadlines keysmith sets; the catalog changes that go with
-- it are below, one section per change.
-- The full 0.10 install script is the 0.9 one followed by this file (the
-- Makefile builds it).

\echo Use "ALTER EXTENSION keysmith UPDATE TO '0.10'" to load this file. \quit

-- Big secret values (issue 20, finding 2).  A version's ciphertext is
-- random bytes, which pglz cannot compress; it tried anyway on every value
-- stored out of line, at about 35 MB/s (1.1 s of a 50 MB put_secret_value).
-- Stored uncompressed from now on; rows already stored stay as they are.
ALTER TABLE keysmith.secret_version ALTER COLUMN ciphertext SET STORAGE EXTERNAL;
