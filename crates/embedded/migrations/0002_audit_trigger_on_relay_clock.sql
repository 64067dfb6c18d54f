-- Schema 2: "expired" is judged on the relay's clock (relay_now(), registered on every
-- connection the relay opens), the clock the code stamps `expires_at` with. SQLite's own clock
-- let the rule enforced here disagree with the same rule in the code (and the suite fail once
-- its fixed dates were a year old). A connection without the function (a hand-opened sqlite3
-- shell) cannot delete audit rows at all.
DROP TRIGGER IF EXISTS audit_no_early_delete;
CREATE TRIGGER audit_no_early_delete BEFORE DELETE ON audit
WHEN OLD.expires_at > relay_now()
BEGIN SELECT RAISE(ABORT, 'audit entries are kept until they expire'); END;
