-- Tells every identity replica which users changed, for GetUser's read model (`user_cache`):
-- on channel `<schema>_users`, at commit, whoever wrote the rows. One notification per user
-- for up to 100 rows a statement; past that (a bulk update) one empty payload, which drops
-- every user, so a big statement does not fill the notification queue. An insert needs none:
-- nobody has read a new id yet.
--
-- CREATE TRIGGER takes a lock that stops writes to `users` (not reads): not granted within 5 s
-- (a long transaction on the table), the migration fails and the next run tries again, rather
-- than queueing every write of the table behind it.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed_rows bigint;
    changed_id uuid;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_users', '');
        RETURN NULL;
    END IF;
    SELECT count(*) INTO changed_rows FROM old_rows;
    IF changed_rows > 100 THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_users', '');
    ELSE
        FOR changed_id IN SELECT o.id FROM old_rows o LOOP
            PERFORM pg_notify(TG_TABLE_SCHEMA || '_users', changed_id::text);
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_update_notify AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_notify();

CREATE TRIGGER users_delete_notify AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_notify();

CREATE TRIGGER users_truncate_notify AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION users_notify();
