// The event-bus benchmark stage in its --small mode, against a real Kafka broker (skipped without Java).
import t from 'tap';
import { kafkaSkip } from '../support/kafka.ts';
import { checkSmallStage } from '../support/bench-stage.ts';

t.setTimeout(300_000);
t.test('npm run bench -- event-bus --small', { skip: kafkaSkip }, async (t) => {
  const output = checkSmallStage(t, 'event-bus');
  // Where the CPU of a record goes, beside the limit's: what decides the ratio on shared cores. It
  // is measured over the timed records, so only when the run timed some (a small run's may all be
  // stored before the first poll sees one).
  const timed = /\| records into medication_dispense [^|]*\| \d[\d,]* records\/s \|/.test(output);
  if (!timed) t.match(output, /\| records into medication_dispense [^|]*\| NaN records\/s \|/, 'untimed: no rate and no CPU per record');
  else if (process.platform === 'linux')
    t.match(
      output,
      /\| CPU per 1,000 records \| service [\d.]+ \+ Postgres [\d.]+ \+ Kafka broker [\d.]+ = [\d.]+ ms \| postgres\.js insert, per 1,000 rows: Postgres [\d.]+ \+ driver [\d.]+ = [\d.]+ ms \|/,
    );
});
