// What `npm start` says when it cannot start: one line naming the setting and what to do, exit 78
// (EX_CONFIG), never a stack trace and never a secret.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startCommand } from '../../scripts/start-command.ts';
import { freePort } from '../../src/db/embedded.ts';
import { configError } from '../support/config-error.ts';
import { loadConfig } from '../../src/config.ts';

// Each test starts the service as a process, some with an embedded PostgreSQL.
t.setTimeout(240_000);

const root = fileURLToPath(new URL('../../', import.meta.url));

function start(
  env: Record<string, string | undefined>,
  untilLine?: RegExp,
): Promise<{ code: number | null; output: string; stop?: () => void }> {
  const { nodeFlags, entry } = startCommand();
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    DATABASE_URL: undefined,
    LOG_LEVEL: 'info',
    JOBS_ENABLED: 'false',
    PORT: '0',
    ...env,
  };
  for (const key of Object.keys(childEnv)) if (childEnv[key] === undefined) delete childEnv[key];
  const child = spawn(process.execPath, [...nodeFlags, entry], {
    cwd: root,
    env: childEnv as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (untilLine?.test(output)) resolve({ code: null, output, stop: () => child.kill('SIGTERM') });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => resolve({ code, output }));
  });
}

const secretPassword = 'hunter2-secret';

for (const [what, password] of [
  ['#', `pa#${secretPassword}`],
  ['/', `pa/${secretPassword}`],
  ['?', `pa?${secretPassword}`],
] as const) {
  t.test(`a DATABASE_URL whose password holds an unencoded ${what} is refused without quoting it`, async (t) => {
    const url = `postgres://rx:${password}@db.example.internal:5432/rx`;
    const message = configError(() => loadConfig({ DATABASE_URL: url }));
    t.match(message, /DATABASE_URL: not a valid URL; percent-encode reserved characters .*# as %23, \/ as %2F/);
    t.notMatch(message, secretPassword);
    const run = await start({ DATABASE_URL: url });
    t.equal(run.code, 78);
    t.notMatch(run.output, secretPassword);
    t.notMatch(run.output, /\n\s+at /, 'no stack trace');
  });
}

t.test('an unreachable database is named by host and port, with no password and no stack trace', async (t) => {
  const port = await freePort();
  const run = await start({ DATABASE_URL: `postgres://rx:${secretPassword}@127.0.0.1:${port}/rx` });
  t.equal(run.code, 78);
  t.match(
    run.output,
    new RegExp(`DATABASE_URL: cannot use PostgreSQL at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\): nothing listens there`),
  );
  t.notMatch(run.output, secretPassword);
  t.notMatch(run.output, /\n\s+at /, 'no stack trace');
});

t.test('a refused password is said so, without the password', { skip: !process.env.DATABASE_URL && 'needs DATABASE_URL' }, async (t) => {
  const server = new URL(process.env.DATABASE_URL!);
  const run = await start({ DATABASE_URL: `postgres://no_such_role_rx:${secretPassword}@${server.host}/postgres` });
  t.equal(run.code, 78);
  t.match(run.output, /DATABASE_URL: cannot use PostgreSQL at .* \((28P01|28000)\)/);
  t.notMatch(run.output, secretPassword);
});

t.test('TRUST_PROXY=0.0.0.0/0 is refused at validation', async (t) => {
  t.match(
    configError(() => loadConfig({ TRUST_PROXY: '0.0.0.0/0' })),
    /TRUST_PROXY: a \/0 range trusts every address/,
  );
  t.match(
    configError(() => loadConfig({ TRUST_PROXY: '::/0' })),
    /TRUST_PROXY: a \/0 range/,
  );
  const run = await start({ TRUST_PROXY: '0.0.0.0/0' });
  t.equal(run.code, 78);
  t.notMatch(run.output, /\n\s+at /, 'no stack trace');
});

t.test('outside development the public development tokens are refused', async (t) => {
  const production = {
    NODE_ENV: 'production',
    DATABASE_URL: 'postgres://rx@db.example.internal/rx',
    DELIVERY_MODE: 'off',
    DELIVERY_START_AT: '2026-06-01T14:00:00Z',
  };
  t.match(
    configError(() => loadConfig({ ...production, INTERNAL_API_TOKENS: 'a-real-secret-token-0001,local-dev-internal-token' })),
    /INTERNAL_API_TOKENS: holds the public development token/,
  );
  t.match(
    configError(() =>
      loadConfig({ ...production, INTERNAL_API_TOKENS: 'a-real-secret-token-0001', VA_NOTIFY_CALLBACK_TOKENS: 'local-dev-callback-token' }),
    ),
    /VA_NOTIFY_CALLBACK_TOKENS: holds the public development token/,
  );
  t.ok(loadConfig({ INTERNAL_API_TOKENS: 'local-dev-internal-token' }), 'development keeps it');
});

t.test('a second npm start on the same embedded PostgreSQL says so and what to do', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rx-tracking-second-start-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { EMBEDDED_PG_DIR: join(dir, 'postgres'), SANDBOX_CALLBACK_DELAY_MS: '0' };
  const first = await start(env, /"msg":"Server listening/);
  t.teardown(() => first.stop?.());
  t.equal(first.code, null, 'the first one runs');
  const second = await start(env);
  t.equal(second.code, 78);
  t.match(second.output, /the embedded PostgreSQL could not start: FATAL: lock file "postmaster\.pid" already exists/);
  t.match(second.output, /another process \(PID \d+\) runs the embedded PostgreSQL .* is another npm start or test still running\?/);
  t.notMatch(second.output, /undefined/);
});
