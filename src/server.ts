// The process entry point (npm start, and the container's command): reads the environment, opens
// the database, builds the app, listens, and shuts down in order on SIGTERM/SIGINT.
import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { isDriverWriteAfterClose } from './db/connect.ts';
import { openDatabase, type Database } from './db/database.ts';
import { createLogger } from './logger.ts';
import { startSandboxesFor } from './sandbox/start.ts';

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(78); // EX_CONFIG
}

const log = createLogger(config.LOG_LEVEL);
let database: Database;
try {
  database = await openDatabase(config, log);
} catch (error) {
  // A database that cannot be used is a setting to fix (or a server to start), said in one line.
  const { name, message } = error as Error;
  if (!(error instanceof ConfigError) && name !== 'EmbeddedPostgresError') throw error;
  process.stderr.write(`${message}\n`);
  process.exit(78);
}
const sandboxes = await startSandboxesFor(config, log);
const app = await buildApp({ config, sql: database.sql, logger: log, sandboxUrls: sandboxes.urls });

// In-flight runs get SHUTDOWN_GRACE_SECONDS (the job runner's wait); what follows them (claims handed
// back, the server and Postgres closed) gets this much more before close-with-grace gives up and exits 1.
const CloseAfterGraceMs = 10_000;

closeWithGrace(
  {
    delay: config.SHUTDOWN_GRACE_SECONDS * 1000 + CloseAfterGraceMs,
    logger: { error: (message: unknown) => log.error({ err: message }, 'shutdown') },
  },
  async ({ signal, err }) => {
    if (err) {
      // After an uncaught error nobody can vouch for the process: a transaction whose connection the
      // driver lost may never settle, so draining could only wait out the grace. It exits 1 at once
      // (close-with-grace) and the orchestrator starts a fresh instance. Nothing is lost: whatever was
      // not committed is done again (event-bus records from the committed offset, claimed emails when
      // their lease runs out), as after a crash.
      if (isDriverWriteAfterClose(err)) {
        log.fatal(
          { err, cause: 'postgres-driver-write-after-close' },
          'exiting: a database connection was cut mid-transaction and the Postgres driver failed with it (postgres.js #1208); uncommitted work is retried after the restart',
        );
      } else {
        log.fatal({ err }, 'exiting after an unexpected error; uncommitted work is retried after the restart');
      }
      return;
    }
    log.info({ signal }, 'shutting down: no new work is claimed; in-flight work gets the grace period');
    // app.close() stops the timers, drains in-flight jobs (releasing their claims) and the server.
    await app.close();
    await sandboxes.close();
    await database.close();
  },
);

await app.listen({ port: config.PORT, host: config.HOST });
const address = app.server.address();
if (address && typeof address === 'object') {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  sandboxes.listening(`http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${address.port}`);
}
