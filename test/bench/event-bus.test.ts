// The event-bus benchmark stage in its --small mode, against a real Kafka broker (skipped without Java).
import t from 'tap';
import { kafkaSkip } from '../support/kafka.ts';
import { checkSmallStage } from '../support/bench-stage.ts';

t.setTimeout(300_000);
t.test('npm run bench -- event-bus --small', { skip: kafkaSkip }, async (t) => checkSmallStage(t, 'event-bus'));
