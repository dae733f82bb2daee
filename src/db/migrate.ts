// Applies the numbered plain-SQL migrations in sql/ in order. Two instances starting together
// serialise on an advisory lock, so each migration runs exactly once; each runs in its own
// transaction, so a failed one leaves nothing half-applied.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sql } from './connect.ts';
import { AdvisoryLock } from './locks.ts';

export const MigrationsDir = fileURLToPath(new URL('../../sql/', import.meta.url));
const MigrationLock = AdvisoryLock.migrate;

export interface Migration {
  version: number;
  name: string;
  file: string;
}

export async function listMigrations(dir = MigrationsDir): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f));
  const migrations = files.map((file) => {
    const [, version, name] = /^(\d+)_(.+)\.sql$/.exec(file)!;
    return { version: Number(version), name: name!, file };
  });
  migrations.sort((a, b) => a.version - b.version);
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) throw new Error(`two migrations numbered ${migrations[i]!.version}`);
  }
  return migrations;
}

/**
 * Returns the migrations this call applied (empty when another instance got there first). Each
 * migration's transaction takes the advisory lock first and then checks whether it is still needed,
 * so a second instance waits for the first and then finds nothing left to do.
 */
export async function migrate(sql: Sql, dir = MigrationsDir): Promise<Migration[]> {
  const migrations = await listMigrations(dir);
  const applied: Migration[] = [];
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MigrationLock})`;
    await tx`
      create table if not exists schema_migration (
        version integer primary key,
        name text not null,
        applied_at timestamptz not null default now()
      )`;
  });
  for (const migration of migrations) {
    const text = await readFile(join(dir, migration.file), 'utf8');
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MigrationLock})`;
      const [done] = await tx`select 1 from schema_migration where version = ${migration.version}`;
      if (done) return;
      await tx.unsafe(text);
      await tx`insert into schema_migration (version, name) values (${migration.version}, ${migration.name})`;
      applied.push(migration);
    });
  }
  return applied;
}

/** True when every migration in sql/ is recorded as applied (readiness check). */
export async function migrationsApplied(sql: Sql, expected: number): Promise<boolean> {
  const [row] = await sql<{ count: number }[]>`
    select count(*)::int as count from schema_migration`.catch(() => [{ count: -1 }]);
  return (row?.count ?? -1) >= expected;
}
