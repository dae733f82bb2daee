// The container runs the exact Node version the tests run, and its HEALTHCHECK asks the liveness route:
// readiness fails on every task at once when the database blips, and the orchestrator would then
// replace them all together.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import t from 'tap';
import { testApp } from '../support/app.ts';

const run = promisify(execFile);
const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  devDependencies: Record<string, string>;
};

t.test('every stage is built FROM the exact Node version of the node devDependency', async (t) => {
  const images = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!);
  t.ok(images.length > 0, 'the Dockerfile has FROM lines');
  const nodeVersion = packageJson.devDependencies.node;
  t.match(nodeVersion, /^\d+\.\d+\.\d+$/, 'the node devDependency is exact');
  for (const image of images) t.equal(image, `node:${nodeVersion}-bookworm-slim`, `${image} pins Node ${nodeVersion}`);
});

/** The HEALTHCHECK's exec-form command. */
function healthcheck(): string[] {
  const match =
    /^HEALTHCHECK\b[^\n]*\\\n\s*CMD\s+(\[.*\])\s*$/m.exec(dockerfile) ?? /^HEALTHCHECK\b.*\bCMD\s+(\[.*\])\s*$/m.exec(dockerfile);
  if (!match) throw new Error('the Dockerfile has no exec-form HEALTHCHECK');
  return JSON.parse(match[1]!) as string[];
}

t.test('the HEALTHCHECK asks /health/live and passes against a running service', async (t) => {
  const command = healthcheck();
  t.match(command.join(' '), /\/health\/live/);
  t.notMatch(command.join(' '), /\/health\/ready/);
  const { url } = await testApp(t, {}, { listen: true });
  const port = new URL(url!).port;
  const [program, ...args] = command;
  const up = await run(program === 'node' ? process.execPath : program!, args, { env: { ...process.env, PORT: port } }).then(
    () => 0,
    (e: { code: number }) => e.code,
  );
  t.equal(up, 0, 'healthy while the service runs');
});

t.test('the HEALTHCHECK fails when nothing answers', async (t) => {
  const [, ...args] = healthcheck();
  const down = await run(process.execPath, args, { env: { ...process.env, PORT: '1' } }).then(
    () => 0,
    (e: { code: number }) => e.code,
  );
  t.equal(down, 1);
});
