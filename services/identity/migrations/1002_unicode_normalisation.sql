-- Addresses and names written before Mailroom put text into NFC and refused invisible
-- characters. Each is brought to the form the parser now produces: invisible and bidi-control
-- characters removed, then NFC. Two claims of one organisation that become the same address are
-- look-alikes of each other: neither is changed, and the pair is reported in
-- `address_normalisation_collisions` (and as a warning in the migration's log) for an admin to
-- settle with TransferEmailAddress, never merged silently.

CREATE TABLE address_normalisation_collisions (
    org_id      UUID        NOT NULL,
    canonical   TEXT        NOT NULL,
    addresses   TEXT[]      NOT NULL,
    user_ids    UUID[]      NOT NULL,
    found_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, canonical)
);

DO $migration$
DECLARE
    invisible CONSTANT TEXT := '[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u202A-\u202E\u2060-\u206F\u2800\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFFB\U000E0000-\U000E0FFF]';
    -- In names the joiners (U+200C, U+200D) and emoji presentation selectors (U+FE0E, U+FE0F)
    -- stay: scripts and emoji need them, and the parser allows them there in context.
    invisible_in_names CONSTANT TEXT := '[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B\u200E\u200F\u202A-\u202E\u2060-\u206F\u2800\u3164\uFE00-\uFE0D\uFEFF\uFFA0\uFFF0-\uFFFB\U000E0000-\U000E0FFF]';
    utf8 CONSTANT BOOLEAN := current_setting('server_encoding') = 'UTF8';
    collision RECORD;
BEGIN
    IF NOT utf8 THEN
        RAISE WARNING 'server encoding is %, not UTF8: stored text is left as it is', current_setting('server_encoding');
        RETURN;
    END IF;

    CREATE TEMP TABLE canonical_claims ON COMMIT DROP AS
        SELECT org_id, address, user_id,
               normalize(regexp_replace(address, invisible, '', 'g'), NFC) AS canonical
        FROM address_claims;

    INSERT INTO address_normalisation_collisions (org_id, canonical, addresses, user_ids)
        SELECT org_id, canonical, array_agg(address ORDER BY address), array_agg(user_id ORDER BY address)
        FROM canonical_claims
        GROUP BY org_id, canonical
        HAVING count(*) > 1;

    FOR collision IN SELECT * FROM address_normalisation_collisions LOOP
        RAISE WARNING 'look-alike addresses in organisation %: % (users %) are all %; left unchanged for an admin to settle',
            collision.org_id, collision.addresses, collision.user_ids, collision.canonical;
    END LOOP;

    -- Claims that change and collide with nothing: the users showing them follow (the
    -- foreign keys are deferred to the end of this transaction).
    DELETE FROM canonical_claims c
        WHERE c.canonical = c.address
           OR EXISTS (SELECT 1 FROM address_normalisation_collisions x
                      WHERE x.org_id = c.org_id AND x.canonical = c.canonical);
    UPDATE users u SET login_email = c.canonical, updated_at = now()
        FROM canonical_claims c
        WHERE u.org_id = c.org_id AND u.id = c.user_id AND u.login_email = c.address;
    UPDATE users u SET contact_email = c.canonical, updated_at = now()
        FROM canonical_claims c
        WHERE u.org_id = c.org_id AND u.id = c.user_id AND u.contact_email = c.address;
    UPDATE address_claims a SET address = c.canonical
        FROM canonical_claims c
        WHERE a.org_id = c.org_id AND a.address = c.address;

    -- Names, positions and department and organisation names.
    UPDATE users SET
        first_name = normalize(regexp_replace(first_name, invisible_in_names, '', 'g'), NFC),
        last_name  = normalize(regexp_replace(last_name, invisible_in_names, '', 'g'), NFC),
        position   = normalize(regexp_replace(position, invisible_in_names, '', 'g'), NFC)
    WHERE first_name <> normalize(regexp_replace(first_name, invisible_in_names, '', 'g'), NFC)
       OR last_name  <> normalize(regexp_replace(last_name, invisible_in_names, '', 'g'), NFC)
       OR position   <> normalize(regexp_replace(position, invisible_in_names, '', 'g'), NFC);
    UPDATE departments SET name = normalize(regexp_replace(name, invisible_in_names, '', 'g'), NFC)
    WHERE name <> normalize(regexp_replace(name, invisible_in_names, '', 'g'), NFC);
    UPDATE organizations SET display_name = normalize(regexp_replace(display_name, invisible_in_names, '', 'g'), NFC)
    WHERE display_name <> normalize(regexp_replace(display_name, invisible_in_names, '', 'g'), NFC);
END
$migration$;
