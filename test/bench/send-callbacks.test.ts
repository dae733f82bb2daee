// Benchmark stages in their --small mode, so that the scripts keep working as the service changes.
import t from 'tap';
import { checkSmallStage } from '../support/bench-stage.ts';

for (const stage of ['send', 'callbacks']) {
  t.test(`npm run bench -- ${stage} --small`, async (t) => checkSmallStage(t, stage));
}
