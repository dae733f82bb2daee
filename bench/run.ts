// `npm run bench -- <stage> [--small]`: runs one stage's benchmark and prints its result table.
// Stages: ingest, grouping, send, callbacks, end-to-end, rate, history, event-bus. --small runs tiny sizes (the test
// suite does, so that the scripts keep working); the full sizes take a few minutes each.
import { runCleanups } from './lib/cleanup.ts';
import { formatTable, progress, type ResultTable } from './lib/report.ts';

export interface StageOptions {
  small: boolean;
}

const stages: Record<string, () => Promise<{ run(options: StageOptions): Promise<ResultTable> }>> = {
  ingest: () => import('./stages/ingest.ts'),
  grouping: () => import('./stages/grouping.ts'),
  send: () => import('./stages/send.ts'),
  callbacks: () => import('./stages/callbacks.ts'),
  'end-to-end': () => import('./stages/end-to-end.ts'),
  rate: () => import('./stages/rate.ts'),
  history: () => import('./stages/history.ts'),
  'event-bus': () => import('./stages/event-bus.ts'),
};

const args = process.argv.slice(2);
const name = args.find((arg) => !arg.startsWith('-'));
const unknown = args.filter((arg) => arg.startsWith('-') && arg !== '--small');
if (name === undefined || !(name in stages) || unknown.length > 0) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(stages).join('|')}> [--small]\n`);
  process.exit(64);
}

// ^C or a kill: close what the stage opened (the scratch database, the children) before leaving.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: cleaning up`);
    void runCleanups().finally(() => process.exit(130));
  });
}

try {
  const stage = await stages[name]!();
  const table = await stage.run({ small: args.includes('--small') });
  process.stdout.write(formatTable(table));
  process.exit(0);
} catch (error) {
  progress(`${name} failed: ${(error as Error)?.stack ?? String(error)}`);
  process.exit(1);
}
