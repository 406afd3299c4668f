-- errors: refusals print a clear message; the pgTAP suite pins SQLSTATEs.
\set VERBOSITY default
SELECT keysmith.create_key('errs');
SELECT keysmith.decrypt_value(''::bytea);
SELECT keysmith.decrypt_value('\x0101'::bytea);
SELECT keysmith.decrypt_value('\x02'::bytea || keysmith.encrypt_value('errs', 'x'));
SELECT keysmith.decrypt_value(set_byte(keysmith.encrypt_value('errs', 'x'), 1, 7));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', 'x') || '\x00'::bytea);
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', 'x', 'a'), 'b');
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', 'x', 'a'));
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', 'x'), 'a');
SELECT keysmith.decrypt_value('\x01017fffffff00000001000000000000000000000000000000000000000000000000000000000000'::bytea);
SELECT keysmith.encrypt_value('no-such-key', 'x');
SELECT keysmith.create_key('errs');
SELECT keysmith.create_key('bad name');
SELECT keysmith.create_key('');
SELECT keysmith.create_key('x', 'vault');
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', '\xff'::bytea));
-- the backend survived all of that
SELECT keysmith.decrypt_value(keysmith.encrypt_value('errs', 'still here'));
