// Every benchmark stage runs in its --small mode, so that the scripts keep working as the service
// changes. What is asserted is what a reader of the benchmarks relies on: the script exits by itself
// with 0 and prints one result table with its limits and the service's peak RSS. No timings.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const root = fileURLToPath(new URL('../../', import.meta.url));
const stages = ['ingest', 'grouping', 'send', 'callbacks', 'end-to-end', 'rate'];

for (const stage of stages) {
  t.test(`npm run bench -- ${stage} --small`, async (t) => {
    const run = spawnSync(process.execPath, ['--no-warnings', 'bench/run.ts', stage, '--small'], {
      cwd: root,
      env: process.env,
      encoding: 'utf8',
      timeout: 240_000,
    });
    t.equal(run.status, 0, `exit code (stderr: ${run.stderr.slice(-2000)})`);
    const tables = run.stdout.split('\n').filter((line) => line.startsWith('| measure |'));
    t.equal(tables.length, 1, 'one result table');
    t.match(run.stdout, /\| --- \| --- \| --- \| --- \| --- \|/);
    t.match(run.stdout, /peak RSS of the service process \| \d[\d,]* MB \| 250 MB/);
    t.match(run.stdout, /machine: \d+ cores/);
  });
}

t.test('an unknown stage is refused with the usage', async (t) => {
  const run = spawnSync(process.execPath, ['--no-warnings', 'bench/run.ts', 'nonsense'], { cwd: root, encoding: 'utf8' });
  t.equal(run.status, 64);
  t.match(run.stderr, /usage: npm run bench -- <ingest\|grouping\|send\|callbacks\|end-to-end\|rate> \[--small\]/);
});
