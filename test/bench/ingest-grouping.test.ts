// Benchmark stages in their --small mode, so that the scripts keep working as the service changes.
import t from 'tap';
import { checkSmallStage, runUsage } from '../support/bench-stage.ts';

for (const stage of ['ingest', 'grouping']) {
  t.test(`npm run bench -- ${stage} --small`, async (t) => checkSmallStage(t, stage));
}

t.test('an unknown stage is refused with the usage', async (t) => {
  const run = runUsage();
  t.equal(run.status, 64);
  t.match(run.stderr, /usage: npm run bench -- <ingest\|grouping\|send\|callbacks\|end-to-end\|rate\|history\|event-bus> \[--small\]/);
});
