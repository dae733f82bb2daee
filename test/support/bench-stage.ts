// Runs a benchmark stage in its --small mode and checks what a reader of the benchmarks relies on:
// the script exits by itself with 0 and prints one result table with its limits and the service's
// peak RSS. No timings. The stages are spread over a few test files so each stays well inside the
// per-file timeout.
import { spawnSync } from 'node:child_process';
import type { Test } from 'tap';
import { repoRoot as root } from './cli.ts';

export function checkSmallStage(t: Test, stage: string): string {
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
  return run.stdout;
}

export function runUsage() {
  return spawnSync(process.execPath, ['--no-warnings', 'bench/run.ts', 'nonsense'], { cwd: root, encoding: 'utf8' });
}
