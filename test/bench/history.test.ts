// The history benchmark stage in its --small mode (a few days of history, a small day), so that the
// script keeps working as the service changes.
import t from 'tap';
import { checkSmallStage } from '../support/bench-stage.ts';

// Two services, two databases and a history: longer than most files on a busy machine.
t.setTimeout(300_000);
t.test('npm run bench -- history --small', async (t) => {
  const output = checkSmallStage(t, 'history');
  // Where the callbacks' CPU went on each database: what their tail follows on shared cores.
  if (process.platform === 'linux')
    t.match(
      output,
      /CPU per 1,000 timed callbacks \(Postgres's takes in retention's beside the history\): empty database service [\d.]+ \+ Postgres [\d.]+ = [\d.]+ ms, beside the history service [\d.]+ \+ Postgres [\d.]+ = [\d.]+ ms/,
    );
});
