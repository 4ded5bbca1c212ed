-- Fills a migrated Lectern database with :users readers (default 10,000), each with 50
-- conversations of 4 messages (2 turns) and one live session, in set-based INSERTs.
-- Every reader's password is the template reader's (registered through GraphQL first, so
-- the hash is a real argon2id PHC string). Ids are UUID-shaped and sort in creation order,
-- as the server's UUIDv7 ids do. Re-running is a no-op once the readers exist.
\set ON_ERROR_STOP on
\timing on
BEGIN;

INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
SELECT format('00000000-0000-7000-8000-%s', lpad(to_hex(u), 12, '0')),
       'Reader ' || u, 'reader' || u || '@bench.lectern', false, now(), now()
FROM generate_series(1, :users) AS u
ON CONFLICT DO NOTHING;

INSERT INTO account (id, "accountId", "providerId", "userId", password, "createdAt", "updatedAt")
SELECT format('00000000-0000-7000-8001-%s', lpad(to_hex(u), 12, '0')),
       format('00000000-0000-7000-8000-%s', lpad(to_hex(u), 12, '0')),
       'credential',
       format('00000000-0000-7000-8000-%s', lpad(to_hex(u), 12, '0')),
       (SELECT a.password FROM account a JOIN "user" t ON t.id = a."userId"
        WHERE t.email = 'template@bench.lectern' AND a."providerId" = 'credential'),
       now(), now()
FROM generate_series(1, :users) AS u
ON CONFLICT DO NOTHING;

INSERT INTO session (id, "expiresAt", token, "createdAt", "updatedAt", "userId")
SELECT format('00000000-0000-7000-8002-%s', lpad(to_hex(u), 12, '0')),
       now() + interval '7 days', md5('bench-session-' || u), now(), now(),
       format('00000000-0000-7000-8000-%s', lpad(to_hex(u), 12, '0'))
FROM generate_series(1, :users) AS u
ON CONFLICT DO NOTHING;

INSERT INTO conversation (id, "userId", title, "createdAt", "updatedAt")
SELECT format('%s-%s-7000-8003-000000000000', lpad(to_hex(u), 8, '0'), lpad(to_hex(c), 4, '0')),
       format('00000000-0000-7000-8000-%s', lpad(to_hex(u), 12, '0')),
       'Question ' || c || ' about tides and currents',
       now() - make_interval(mins => 60 * (51 - c)),
       now() - make_interval(mins => 60 * (51 - c)) + interval '2 minutes'
FROM generate_series(1, :users) AS u, generate_series(1, 50) AS c
ON CONFLICT DO NOTHING;

INSERT INTO message (id, "conversationId", role, content, sources, "createdAt")
SELECT format('%s-%s-7000-8004-%s', lpad(to_hex(u), 8, '0'), lpad(to_hex(c), 4, '0'), lpad(to_hex(m), 12, '0')),
       format('%s-%s-7000-8003-000000000000', lpad(to_hex(u), 8, '0'), lpad(to_hex(c), 4, '0')),
       CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END,
       CASE WHEN m % 2 = 1
            THEN 'Why do spring tides follow the new and the full moon, question ' || c || '?'
            ELSE 'Spring tides come when the Sun and the Moon pull in line, at new and full moon; '
                 || 'their pulls add up, so high tides are higher and low tides lower. [1] '
                 || 'Neap tides come a week later, when the pulls are at right angles. [2]'
       END,
       CASE WHEN m % 2 = 1 THEN '[]'::jsonb
            ELSE '[{"title":"Tides","path":"tides.md","snippet":"Spring tides…","score":0.92}]'::jsonb
       END,
       now() - make_interval(mins => 60 * (51 - c)) + make_interval(secs => 30 * m)
FROM generate_series(1, :users) AS u, generate_series(1, 50) AS c, generate_series(1, 4) AS m
ON CONFLICT DO NOTHING;

COMMIT;
ANALYZE;
SELECT (SELECT count(*) FROM "user") AS users,
       (SELECT count(*) FROM conversation) AS conversations,
       (SELECT count(*) FROM message) AS messages;
