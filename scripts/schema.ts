// Writes sql/schema.sql (npm run schema): migrates a new, empty database and writes what it holds.
// The database is made on the server DATABASE_URL names, or on an embedded PostgreSQL when it is
// unset, and dropped afterwards. test/db/schema.test.ts fails when the file and the migrations differ.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../src/db/connect.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { dumpSchema } from '../src/db/schema-dump.ts';

const dir = mkdtempSync(join(tmpdir(), 'rx-tracking-schema-pg-'));
const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dir, persistent: false });
const server = new URL(process.env.DATABASE_URL ?? embedded!.url);
const admin = connect(server.toString(), { max: 1 });
const name = `rx_schema_${randomBytes(6).toString('hex')}`;
try {
  await admin.unsafe(`create database ${name}`);
  const database = new URL(server);
  database.pathname = `/${name}`;
  const sql = connect(database.toString(), { max: 1 });
  try {
    await migrate(sql);
    writeFileSync(new URL('../sql/schema.sql', import.meta.url), await dumpSchema(sql));
  } finally {
    await sql.end({ timeout: 5 });
  }
} finally {
  await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
  await admin.end({ timeout: 5 });
  await embedded?.stop();
  rmSync(dir, { recursive: true, force: true });
}
