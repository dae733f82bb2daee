// npm run dev: the service as npm start runs it, restarted when a source file changes, its log
// printed for a person (pino-pretty) rather than as JSON.
import { spawn } from 'node:child_process';
import { utimesSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { freePortBelowEphemeralRange } from '../../src/db/embedded.ts';
import { testDatabase } from '../support/database.ts';

const root = new URL('../../', import.meta.url).pathname;
const packageJson = (await import('../../package.json', { with: { type: 'json' } })).default as { scripts: Record<string, string> };

t.test('npm run dev restarts the service when a source file changes, with readable logs', async (t) => {
  const db = await testDatabase(t);
  const port = await freePortBelowEphemeralRange();
  let output = '';
  // The script as npm runs it, through a shell, with node_modules/.bin on the PATH.
  const child = spawn('sh', ['-c', packageJson.scripts.dev!], {
    cwd: root,
    env: {
      PATH: `${root}node_modules/.bin:${process.env.PATH ?? ''}`,
      HOME: process.env.HOME ?? '',
      DATABASE_URL: db.url,
      PORT: String(port),
      JOBS_ENABLED: 'false',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  // The watcher, the service and pino-pretty form one process group; the group gets SIGTERM, and
  // SIGKILL if it is still there after the service's shutdown grace, so that nothing outlives the test.
  t.teardown(async () => {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      return;
    }
    const inTime = await Promise.race([exited.then(() => true), sleep(25_000).then(() => false)]);
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
    if (!inTime) await exited;
    child.stdout.destroy();
    child.stderr.destroy();
  });
  const listening = () => output.match(/INFO[^\n]*Server listening/g)?.length ?? 0;
  const until = async (condition: () => boolean, what: string) => {
    for (let i = 0; i < 600 && !condition(); i++) await sleep(100);
    t.ok(condition(), what);
  };
  await until(() => listening() === 1, 'started');
  t.ok((await fetch(`http://127.0.0.1:${port}/health/live`)).ok, 'answers');
  const now = new Date();
  utimesSync(`${root}src/health/routes.ts`, now, now);
  await until(() => listening() === 2, 'restarted after the change');
  t.match(output, /Restarting 'src\/server\.ts'/);
  t.match(output, /^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO: Server listening at http:\/\/127\.0\.0\.1:\d+$/m, 'a log line for a person');
  t.notMatch(output, /^\{"level":/m, 'no JSON lines');
  t.ok((await fetch(`http://127.0.0.1:${port}/health/live`)).ok, 'answers after the restart');
});
