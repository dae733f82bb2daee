// Stopping the consumer, against a real broker: SIGTERM, and a broker that goes away and comes back.
import t from 'tap';
import { startKafkaBroker } from '../../src/sandbox/kafka-broker.ts';
import { testApp } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { committedOffsets, countOf, jsonDispenseEvent, kafkaSkip, testPublisher, testTopic } from '../support/kafka.ts';
import { waitFor } from '../support/wait.ts';
import { startServiceProcess } from '../support/service-process.ts';

t.setTimeout(300_000);
if (kafkaSkip) t.plan(0, kafkaSkip);
// Now and then this file's process stayed alive after every test had passed, until the runner's
// timeout failed it. Once the tests are done, whatever is still open is named on stderr and the
// process ends with the tests' own exit code; the timer does not keep a process that exits alive.
t.teardown(() => {
  setTimeout(() => {
    process.stderr.write(`still open after the tests: ${process.getActiveResourcesInfo().join(', ')}\n`);
    process.exit();
  }, 10_000).unref();
});

t.test('SIGTERM commits what is stored and leaves the group within the grace period', async (t) => {
  const bus = await testTopic(t, 2);
  const { broker, topic, group, settings } = bus;
  const db = await testDatabase(t);
  const service = await startServiceProcess(
    { ...settings, DATABASE_URL: db.url, JOBS_ENABLED: 'false', SHUTDOWN_GRACE_SECONDS: '5' },
    { readyTimeoutMs: 120_000 },
  );
  t.teardown(() => {
    service.child.kill('SIGKILL');
  });
  const publisher = await testPublisher(t, bus);
  await publisher.publish([1, 2, 3].map(jsonDispenseEvent), { partition: 0 });
  await publisher.publish([4, 5].map(jsonDispenseEvent), { partition: 1 });
  await waitFor('stored', async () => (await countOf(db.sql, 'select count(*)::int as n from inbound_message')) === 5);
  const started = Date.now();
  service.child.kill('SIGTERM');
  const exit = await service.exited;
  t.equal(exit.code, 0, 'exits cleanly');
  t.ok(Date.now() - started < 5000 + 10_000, `stopped in ${Date.now() - started} ms`);
  t.match(service.output(), /event-bus consumer stopped/);
  const offsets = await committedOffsets(broker.plaintext, group, topic);
  t.same([offsets.get(0), offsets.get(1)], [3n, 2n], 'what was stored is committed');

  // It left the group: a new instance gets every partition at once, not after a session timeout.
  const next = await testApp(t, settings, { db });
  await waitFor('the new instance holds both partitions', () => next.app.eventBus!.partitions().length === 2);
  t.equal(await countOf(db.sql, 'select count(*)::int as n from inbound_message'), 5, 'and reads nothing again');
});

t.test('/health/ready reports a consumer that lost its broker, and ready again once it is back and reading', async (t) => {
  const broker = await startKafkaBroker({ partitions: 1 });
  t.teardown(() => broker.stop());
  const bus = await testTopic(t, 1, broker);
  const { app, db } = await testApp(t, bus.settings);
  const ready = async () => {
    const response = await app.inject({ method: 'GET', url: '/health/ready' });
    return { statusCode: response.statusCode, eventBus: (response.json() as { checks: { eventBus?: string } }).checks.eventBus };
  };
  await waitFor('connected', async () => (await ready()).eventBus === 'ok');
  t.same(await ready(), { statusCode: 200, eventBus: 'ok' });
  broker.process.kill('SIGKILL');
  await waitFor('not ready', async () => (await ready()).statusCode === 503, 60_000);
  t.same(await ready(), { statusCode: 503, eventBus: 'broker unreachable' });

  // The broker back on the same port, with its topic: the consumer reconnects by itself.
  await broker.restart();
  const publisher = await testPublisher(t, bus);
  await publisher.publish([jsonDispenseEvent(1)]);
  await waitFor(
    'the record published after the broker came back stored',
    async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 1,
    120_000,
  );
  await waitFor('ready again', async () => (await ready()).statusCode === 200, 60_000);
  t.same(await ready(), { statusCode: 200, eventBus: 'ok' });
});
