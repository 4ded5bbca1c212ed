// PostGraphile 5 over Lectern's own database, for bench/peer.sh: the Amber preset, the
// public schema, a pool as large as Lectern's (DATABASE_MAX_CONNECTIONS), no GraphiQL,
// no explain, no watch. No authentication: it answers any reader's conversations.
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

export default {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      connectionString: process.env.DATABASE_URL,
      schemas: ["public"],
      poolConfig: { max: Number(process.env.POOL_SIZE ?? 20) },
    }),
  ],
  grafserv: {
    host: "127.0.0.1",
    port: Number(process.env.PORT ?? 8090),
    graphiql: false,
    watch: false,
  },
  grafast: { explain: false },
};
