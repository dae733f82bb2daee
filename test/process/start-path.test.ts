// The container and `npm start` are one start path: the same node flags (the heap caps, no pretenuring) and the same
// entry point, so what the tests and benchmarks run is what production runs.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { startCommand } from '../../scripts/start-command.ts';

const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');

t.test("the Dockerfile's CMD is npm start's command", async (t) => {
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(dockerfile);
  t.ok(cmd, 'the Dockerfile has an exec-form CMD');
  const { nodeFlags, entry } = startCommand();
  t.same(JSON.parse(cmd![1]!), ['node', ...nodeFlags, entry]);
});

t.test('the start path caps the heap', async (t) => {
  const { nodeFlags, entry } = startCommand();
  t.equal(entry, 'src/server.ts');
  t.ok(
    nodeFlags.some((flag) => /^--max-old-space-size=\d+$/.test(flag)),
    'old space capped',
  );
  t.ok(
    nodeFlags.some((flag) => /^--max-semi-space-size=\d+$/.test(flag)),
    'young generation capped',
  );
  t.ok(nodeFlags.includes('--no-allocation-site-pretenuring'), 'short-lived objects start young, whatever lived long before');
});

t.test('node takes the start flags', async (t) => {
  // A flag this node does not know stops it before the service starts: the container would never come up.
  const { nodeFlags } = startCommand();
  const run = spawnSync(process.execPath, [...nodeFlags, '-e', 'process.exit(0)'], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
});
