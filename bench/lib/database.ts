// The database a benchmark runs on: an embedded PostgreSQL in a temporary folder by default, or a
// scratch database created on the server named by DATABASE_URL (and dropped at the end).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Sql } from '../../src/db/connect.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { onInterrupt } from './cleanup.ts';
import { progress } from './report.ts';

export interface BenchDatabase {
  /** URL of the migrated database the service and the drivers use. */
  url: string;
  /** A pool for setup, checks and the limits measured beside the service. */
  sql: Sql;
  /** `PostgreSQL 17.x (embedded, fsync off)` and the like, for the report. */
  description: string;
  close(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

async function serverDescription(sql: Sql, where: string): Promise<string> {
  const [row] = await sql<{ version: string; fsync: string; shared_buffers: string; synchronous_commit: string; autovacuum: string }[]>`
    select current_setting('server_version') as version, current_setting('fsync') as fsync,
           current_setting('shared_buffers') as shared_buffers, current_setting('synchronous_commit') as synchronous_commit,
           current_setting('autovacuum') as autovacuum`;
  return `PostgreSQL ${row!.version} (${where}; fsync ${row!.fsync}, synchronous_commit ${row!.synchronous_commit}, shared_buffers ${row!.shared_buffers}, autovacuum ${row!.autovacuum})`;
}

/**
 * Writes out what a stage's setup left in the WAL before a timed part starts, so that the timed part
 * does not pay for the checkpoint the setup (hundreds of thousands of rows) would otherwise set off in
 * the middle of it. Measured on grouping: unsettled, its first pass ran 30% slower than the second,
 * which adds 5,000,000 rows of history.
 */
export async function settle(sql: Sql): Promise<void> {
  await sql`checkpoint`;
}

/**
 * `keep` names a database on the DATABASE_URL server that outlives the run: created (and migrated)
 * if it does not exist, reused if it does, never dropped. The history stage keeps its history there
 * so that writing it and measuring beside it can be two runs.
 */
export async function benchDatabase(options: { poolMax?: number; keep?: string } = {}): Promise<BenchDatabase> {
  const max = options.poolMax ?? 10;
  const serverUrl = process.env.DATABASE_URL;
  if (options.keep !== undefined && !serverUrl) throw new Error('a kept bench database needs DATABASE_URL (a PostgreSQL server)');
  if (options.keep !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(options.keep)) {
    throw new Error('a kept bench database name: lower-case letters, digits and underscores');
  }
  if (serverUrl) {
    const admin = connect(serverUrl, { max: 1, applicationName: 'rx-bench-admin' });
    const name = options.keep ?? `rx_bench_${randomBytes(5).toString('hex')}`;
    const [exists] = await admin`select 1 from pg_database where datname = ${name}`;
    if (!exists) await admin.unsafe(`create database ${name}`);
    const url = withDatabase(serverUrl, name);
    const sql = connect(url, { max, applicationName: 'rx-bench' });
    await migrate(sql);
    const description = await serverDescription(sql, `DATABASE_URL server, ${options.keep ? 'kept' : 'scratch'} database ${name}`);
    progress(`database: ${description}`);
    const close = async () => {
      forget();
      await sql.end({ timeout: 5 });
      if (!options.keep) await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
      await admin.end({ timeout: 5 });
    };
    const forget = onInterrupt(close);
    return { url, sql, description, close };
  }
  const dir = mkdtempSync(join(tmpdir(), 'rx-bench-pg-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir);
  progress(`database: starting an embedded PostgreSQL in ${dir}`);
  const embedded = await startEmbeddedPostgres({ dir, persistent: false });
  const sql = connect(embedded.url, { max, applicationName: 'rx-bench' });
  await migrate(sql);
  const description = await serverDescription(sql, 'embedded, temporary folder');
  progress(`database: ${description}`);
  const close = async () => {
    forget();
    await sql.end({ timeout: 5 });
    await embedded.stop().catch(() => {});
    removeDir();
  };
  const forget = onInterrupt(close);
  return { url: embedded.url, sql, description, close };
}
