// Benchmark stages in their --small mode, so that the scripts keep working as the service changes.
import t from 'tap';
import { checkSmallStage } from '../support/bench-stage.ts';

t.test('npm run bench -- send --small', async (t) => {
  checkSmallStage(t, 'send');
});

t.test('npm run bench -- callbacks --small', async (t) => {
  const output = checkSmallStage(t, 'callbacks');
  // Where a callback's CPU goes beside the limit's: on shared cores, what the tail follows.
  if (process.platform === 'linux')
    t.match(
      output,
      /\| CPU per 1,000 callbacks at 100\/s \(the driver's is the load generator's\) \| service [\d.]+ \+ Postgres [\d.]+ \+ driver [\d.]+ = [\d.]+ ms \| SQL-only, per 1,000 transactions: Postgres [\d.]+ \+ driver [\d.]+ = [\d.]+ ms \|/,
    );
});
