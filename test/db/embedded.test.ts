// The embedded PostgreSQL a newcomer gets with no DATABASE_URL: it starts wherever the clone is,
// and when it cannot start it says why and what to do.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { packagedBinaries, startEmbeddedPostgres } from '../../src/db/embedded.ts';

// Each test starts one or two PostgreSQL servers (and initdb), which take a while on a busy machine.
t.setTimeout(240_000);

function scratch(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'rx-tracking-embedded-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function answers(url: string): Promise<number> {
  const sql = connect(url, { max: 1 });
  try {
    const [row] = await sql<{ one: number }[]>`select 1 as one`;
    return row!.one;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

t.test(
  'as root, it runs from a private folder the postgres user cannot enter',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    // A clone in `mktemp -d` (mode 700): its binaries and its data folder are out of the postgres user's reach.
    const privateFolder = scratch(t);
    const binaries = join(privateFolder, 'native');
    cpSync((await packagedBinaries()).root, binaries, { recursive: true, verbatimSymlinks: true });
    const db = await startEmbeddedPostgres({ dir: join(privateFolder, '.data', 'postgres'), binaries, persistent: false });
    t.teardown(() => db.stop());
    t.equal(await answers(db.url), 1);
    t.notOk(db.dir.startsWith(privateFolder), 'the data is kept where the postgres user can reach it');

    await db.stop();
    const again = await startEmbeddedPostgres({ dir: join(privateFolder, '.data', 'postgres'), binaries, persistent: false });
    t.teardown(() => again.stop());
    t.equal(again.dir, db.dir, 'the next start finds the same data folder');
  },
);

t.test('a second start on a data folder in use names the other process and what to do', async (t) => {
  const dir = join(scratch(t), 'postgres');
  const first = await startEmbeddedPostgres({ dir });
  t.teardown(() => first.stop());
  const error = await startEmbeddedPostgres({ dir }).catch((e: Error) => e);
  t.type(error, Error);
  const message = (error as Error).message;
  t.notMatch(message, /undefined/);
  t.match(message, /lock file "postmaster\.pid" already exists/, "PostgreSQL's own message");
  t.match(message, /another process \(PID \d+\).*Stop it, or set EMBEDDED_PG_DIR/);
  t.equal(await answers(first.url), 1, 'the running one is left alone');
});

t.test('a PostgreSQL orphaned by a killed instance is stopped, and the next start succeeds', async (t) => {
  const dir = join(scratch(t), 'postgres');
  const module = new URL('../../src/db/embedded.ts', import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { startEmbeddedPostgres } = await import(${JSON.stringify(module)});
     const db = await startEmbeddedPostgres({ dir: ${JSON.stringify(dir)} });
     console.log(db.url); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const orphanUrl = line.toString().trim();
  t.equal(await answers(orphanUrl), 1);
  child.kill('SIGKILL');
  await once(child, 'exit');
  t.equal(await answers(orphanUrl), 1, 'the killed instance left its PostgreSQL running');

  const db = await startEmbeddedPostgres({ dir });
  t.teardown(() => db.stop());
  t.equal(await answers(db.url), 1);
  await t.rejects(answers(orphanUrl), 'the orphan is gone');
});

t.test('a data folder that cannot be made says which and what to do', async (t) => {
  const file = join(scratch(t), 'not-a-folder');
  writeFileSync(file, '');
  const error = await startEmbeddedPostgres({ dir: join(file, 'postgres') }).then(
    async (db) => {
      await db.stop();
      return new Error('started');
    },
    (e: Error) => e,
  );
  t.match(
    (error as Error).message,
    /could not be created in .*not-a-folder\/postgres \(ENOTDIR\): set EMBEDDED_PG_DIR to a writable folder/,
  );
});

t.test(
  'as root, an unwritable temporary folder is named, with what to do',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    const privateFolder = scratch(t);
    const binaries = join(privateFolder, 'native');
    cpSync((await packagedBinaries()).root, binaries, { recursive: true, verbatimSymlinks: true });
    const notAFolder = join(privateFolder, 'tmp-is-a-file');
    writeFileSync(notAFolder, '');
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = notAFolder;
    t.teardown(() => {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    });
    const error = await startEmbeddedPostgres({ dir: join(privateFolder, 'postgres'), binaries }).then(
      async (db) => {
        await db.stop();
        return new Error('started');
      },
      (e: Error) => e,
    );
    t.match(
      error.message,
      /cannot write a copy of the PostgreSQL binaries to the temporary folder .*tmp-is-a-file \(ENOTDIR\): set TMPDIR to a writable folder, or set DATABASE_URL/,
    );
    t.notMatch(error.message, /undefined/);
  },
);
