// The consumer when things fail, against a real broker: the database cut mid-batch, an instance killed.
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { testApp } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { committedOffsets, countOf, jsonDispenseEvent, kafkaSkip, testPublisher, testTopic } from '../support/kafka.ts';
import { waitFor } from '../support/wait.ts';
import { startServiceProcess, superviseServiceProcess } from '../support/service-process.ts';

t.setTimeout(300_000);
if (kafkaSkip) t.plan(0, kafkaSkip);

t.test('the database terminated mid-batch: nothing committed past what was stored, then everything stored once', async (t) => {
  const bus = await testTopic(t, 1);
  const { broker, topic, group } = bus;
  const db = await testDatabase(t);
  // A real process under a supervisor: postgres.js may take the process down with the cut connection
  // (src/db/connect.ts, isDriverWriteAfterClose); it then exits and is started again, as in production.
  const service = await superviseServiceProcess(
    { ...bus.settings, DATABASE_URL: db.url, JOBS_ENABLED: 'false' },
    { readyTimeoutMs: 120_000 },
  );
  t.teardown(() => service.stop());
  const publisher = await testPublisher(t, bus);

  // Another session holds a lock that the batch's inserts wait for, so the batch is caught mid-way.
  const admin = connect(db.url, { max: 1 });
  t.teardown(() => admin.end({ timeout: 5 }));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const holder = admin.begin(async (tx) => {
    await tx`lock table inbound_message in share row exclusive mode`;
    locked();
    await released;
  });
  await isLocked;
  const waitingOnTheLock = async () => {
    const rows = await db.sql`select pid from pg_stat_activity where datname = ${db.name} and wait_event_type = 'Lock'`;
    return rows.map((r) => r.pid as number);
  };
  await publisher.publish([1, 2, 3, 4, 5].map(jsonDispenseEvent));
  const waiting = await waitFor('the batch waiting inside its transaction', async () => {
    const pids = await waitingOnTheLock();
    return pids.length > 0 ? pids : undefined;
  });
  await db.sql`select pg_terminate_backend(pid) from unnest(${waiting}::int[]) as pid`;
  // Retried by the same instance, or by the one started after it exited: either way the batch comes
  // back to the lock on a new connection.
  await waitFor('the failed batch retried', async () => (await waitingOnTheLock()).some((pid) => !waiting.includes(pid)));
  if (service.exits.length === 0)
    t.match(service.current().output(), 'event-bus batch not stored (the database unavailable)', 'the instance logged the failed batch');
  t.equal((await committedOffsets(broker.plaintext, group, topic)).get(0), undefined, 'no offset committed');
  release();
  await holder;
  await waitFor('every record stored', async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 5);
  t.equal(await countOf(db.sql, 'select count(*)::int as n from inbound_message'), 5, 'each record kept once');
  await waitFor('committed after it was stored', async () => (await committedOffsets(broker.plaintext, group, topic)).get(0) === 5n);
  t.comment(`instances restarted: ${service.exits.length}`);
  for (const exit of service.exits) {
    t.equal(exit.code, 1, 'an instance the driver took down exits 1, for its restart');
    t.match(exit.output, /"level":60.*"cause":"postgres-driver-write-after-close".*postgres\.js #1208/, 'and says why in one log line');
  }
});

t.test("two instances in one group split the partitions; a killed instance's partitions are taken over with nothing lost", async (t) => {
  const bus = await testTopic(t, 4);
  const { broker, topic, group, settings } = bus;
  const db = await testDatabase(t);
  const first = await testApp(t, settings, { db });
  await waitFor('the first instance holds every partition', () => first.app.eventBus!.partitions().length === 4);
  const second = await startServiceProcess({ ...settings, DATABASE_URL: db.url, JOBS_ENABLED: 'false' }, { readyTimeoutMs: 120_000 });
  t.teardown(() => {
    second.child.kill('SIGKILL');
  });
  await waitFor('the partitions split', () => first.app.eventBus!.partitions().length === 2, 60_000);
  const held = first.app.eventBus!.partitions();

  const publisher = await testPublisher(t, bus);
  for (let partition = 0; partition < 4; partition++)
    await publisher.publish([jsonDispenseEvent(partition * 10 + 1), jsonDispenseEvent(partition * 10 + 2)], { partition });
  await waitFor('8 records stored', async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 8);
  const byInstance = await db.sql`select distinct event_partition from inbound_message where event_partition <> all(${held}::int[])`;
  t.equal(byInstance.length, 2, 'the other instance stored the records of its two partitions');

  second.child.kill('SIGKILL');
  await second.exited;
  for (let partition = 0; partition < 4; partition++)
    await publisher.publish([jsonDispenseEvent(partition * 10 + 3), jsonDispenseEvent(partition * 10 + 4)], { partition });
  await waitFor("the killed instance's partitions taken over", () => first.app.eventBus!.partitions().length === 4, 60_000);
  await waitFor(
    '16 records stored',
    async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 16,
    60_000,
  );
  t.equal(await countOf(db.sql, 'select count(*)::int as n from inbound_message'), 16, 'each record kept once');
  await waitFor('every partition committed to its end', async () => {
    const offsets = await committedOffsets(broker.plaintext, group, topic);
    return [0, 1, 2, 3].every((p) => offsets.get(p) === 4n);
  });
});
