// A fresh, migrated database per test: on the server named by DATABASE_URL when it is set (CI and
// this machine), otherwise on an embedded PostgreSQL started once per test file.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tap from 'tap';
import { connect, type Sql } from '../../src/db/connect.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';

interface Teardown {
  teardown(fn: () => unknown): void;
}

let serverUrl: Promise<string> | undefined;

function adminUrl(): Promise<string> {
  serverUrl ??= (async () => {
    if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
    const dir = mkdtempSync(join(tmpdir(), 'rx-tracking-test-pg-'));
    const embedded = await startEmbeddedPostgres({ dir, persistent: false });
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    // The server's child process keeps the event loop alive: stop it when the file's tests end.
    tap.teardown(() => embedded.stop().catch(() => {}));
    return embedded.url;
  })();
  return serverUrl;
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

export interface TestDatabase {
  sql: Sql;
  url: string;
  name: string;
}

/** Creates a new database, migrates it, and drops it when the test ends. */
export async function testDatabase(t: Teardown, options: { max?: number } = {}): Promise<TestDatabase> {
  const admin = connect(await adminUrl(), { max: 1 });
  const name = `rx_test_${randomBytes(6).toString('hex')}`;
  await admin.unsafe(`create database ${name}`);
  const url = withDatabase(await adminUrl(), name);
  const sql = connect(url, { max: options.max ?? 10 });
  await migrate(sql);
  t.teardown(async () => {
    await sql.end({ timeout: 5 });
    await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end({ timeout: 5 });
  });
  return { sql, url, name };
}
