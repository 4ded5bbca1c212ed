// A real Better Auth server (npm `better-auth`, pinned by package-lock.json) on the
// database Lectern uses, for Lectern's tests: `tests/api/better_auth.rs` starts it.
//
//   node server.mjs            serve on 127.0.0.1:$PORT (0 picks one; the first line
//                              printed is `listening <port>`)
//   node server.mjs --migrate  run Better Auth's own migrations and exit
//
// Settings (environment): DATABASE_URL, BETTER_AUTH_SECRET, PORT, and the options a
// deployer would set: COOKIE_PREFIX (advanced.cookiePrefix), REQUIRE_EMAIL_VERIFICATION
// (emailAndPassword.requireEmailVerification), COOKIE_CACHE (session.cookieCache) and
// PASSWORD_HASH=argon2id (the password hash/verify pair the README gives for sharing
// argon2id hashes with Lectern).
import http from "node:http";

import { Algorithm, hash as argon2Hash, verify as argon2Verify } from "@node-rs/argon2";
import { betterAuth } from "better-auth";
import { hashPassword, verifyPassword } from "better-auth/crypto";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import pg from "pg";

const env = process.env;
const port = Number(env.PORT ?? 0);
const baseURL = `http://127.0.0.1:${port}`;

// Lectern writes argon2id (PHC strings, OWASP parameters) when PASSWORD_HASH=argon2id;
// this is how Better Auth verifies those and keeps writing them, while still verifying
// its own scrypt hashes. Both sides hash the NFKC form of the password.
const argon2id = {
  hash: (password) =>
    argon2Hash(password.normalize("NFKC"), {
      algorithm: Algorithm.Argon2id,
      memoryCost: 19456,
      timeCost: 2,
      parallelism: 1,
    }),
  verify: ({ hash, password }) =>
    hash.startsWith("$argon2")
      ? argon2Verify(hash, password.normalize("NFKC"))
      : verifyPassword({ hash, password }),
};

const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: 4 });
const options = {
  database: pool,
  secret: env.BETTER_AUTH_SECRET,
  baseURL,
  trustedOrigins: [baseURL],
  emailAndPassword: {
    enabled: true,
    requireEmailVerification: env.REQUIRE_EMAIL_VERIFICATION === "true",
    password: env.PASSWORD_HASH === "argon2id" ? argon2id : { hash: hashPassword, verify: verifyPassword },
  },
  user: { deleteUser: { enabled: true } },
  session: env.COOKIE_CACHE === "true" ? { cookieCache: { enabled: true, maxAge: 300 } } : {},
  advanced: env.COOKIE_PREFIX ? { cookiePrefix: env.COOKIE_PREFIX } : {},
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
};

if (process.argv.includes("--migrate")) {
  const { toBeCreated, toBeAdded, runMigrations } = await getMigrations(options);
  console.log(
    `migrate: ${toBeCreated.length} tables to create, ${toBeAdded.length} to alter` +
      [...toBeCreated, ...toBeAdded].map((t) => ` ${t.table}(${Object.keys(t.fields).join(",")})`).join(""),
  );
  await runMigrations();
  await pool.end();
  process.exit(0);
}

const auth = betterAuth(options);
const server = http.createServer(toNodeHandler(auth));
server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => pool.end().then(() => process.exit(0))));
}
