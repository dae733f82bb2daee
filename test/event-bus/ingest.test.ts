// Records from a real Kafka broker become the same dispenses and emails as the HTTP path; a record
// read twice stores nothing twice; a record that cannot be read is kept with its reason and the
// records after it are still ingested.
import { spawn } from 'node:child_process';
import t from 'tap';
import { eventsOfFile, encodeDispenseEvent } from '../../src/event-bus/publish.ts';
import { frame } from '../../src/event-bus/schema.ts';
import { testApp, type TestApp, runJob } from '../support/app.ts';
import { postSample, samples, samplesDir, sampleSsns } from '../support/ingest.ts';
import { committedOffsets, countOf, eventBusSettings, kafkaSkip, testPublisher, testTopic, uniqueName } from '../support/kafka.ts';
import { waitFor } from '../support/wait.ts';

t.setTimeout(300_000);
if (kafkaSkip) t.plan(0, kafkaSkip);

/** What a database holds of the dispenses and emails, independent of ids and times. */
async function dispensesAndEmails(sql: TestApp['db']['sql']) {
  const dispenses = await sql`
    select station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity::text,
           dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state, state_reason
      from medication_dispense order by station_number, rx_number, fill_number, tracking_number`;
  const emails = await sql`
    select e.patient_icn, e.state, array_agg(d.rx_number order by d.rx_number) as rx_numbers
      from tracking_email e join medication_dispense d on d.tracking_email_id = e.id
     group by e.id, e.patient_icn, e.state order by e.patient_icn`;
  return { dispenses: [...dispenses], emails: [...emails] };
}

/** An app consuming a topic of its own with `partitions` partitions. */
async function eventBusApp(t: { teardown(fn: () => unknown): void }, partitions: number) {
  const bus = await testTopic(t, partitions);
  const app = await testApp(t, { GROUPING_QUIET_MINUTES: '0', ...bus.settings });
  return { ...bus, ...app };
}

t.test('records of every sample become the same dispenses and emails as the HTTP path', async (t) => {
  const viaKafka = await eventBusApp(t, 3);
  const { topic } = viaKafka;
  const viaHttp = await testApp(t, { GROUPING_QUIET_MINUTES: '0' });

  const publisher = await testPublisher(t, viaKafka);
  for (const sample of samples) {
    await postSample(viaHttp.app, sample);
    await publisher.publish(eventsOfFile(`${samplesDir}${sample.file}`));
  }
  const records = samples.reduce((n, s) => n + eventsOfFile(`${samplesDir}${s.file}`).length, 0);
  await waitFor(
    'every record stored',
    async () => (await countOf(viaKafka.db.sql, `select count(*)::int as n from inbound_message where source = 'event-bus'`)) === records,
  ).catch((e) => {
    console.error(viaKafka.logs.text);
    throw e;
  });

  const kafka = await dispensesAndEmails(viaKafka.db.sql);
  t.ok(kafka.dispenses.length > 5, `${kafka.dispenses.length} dispenses`);
  t.same(kafka.dispenses, (await dispensesAndEmails(viaHttp.db.sql)).dispenses, 'the same dispenses, field for field');

  for (const { app } of [viaKafka, viaHttp]) {
    await runJob(app, 'grouping');
    await runJob(app, 'send');
  }
  const emails = (await dispensesAndEmails(viaKafka.db.sql)).emails;
  t.ok(emails.length >= 4, `${emails.length} emails`);
  t.same(emails, (await dispensesAndEmails(viaHttp.db.sql)).emails, 'the same emails, to the same veterans, with the same prescriptions');

  const [kept] = await viaKafka.db.sql`
    select count(*)::int as n, count(*) filter (where event_topic = ${topic} and event_offset is not null)::int as positioned,
           bool_or(body ~ ${sampleSsns.join('|')}) as ssn
      from inbound_message where source = 'event-bus'`;
  t.same(kept, { n: records, positioned: records, ssn: false }, 'each record kept with its position, SSNs masked');
  let metrics = (await viaKafka.app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(metrics, /rx_event_bus_records_total\{outcome="stored"\} \d+/);
  t.match(metrics, /rx_event_bus_records_total\{outcome="invalid_dispense"\} 2/, 'not-hl7.txt and truncated.hl7 are invalid dispenses');
  await waitFor('the lag of every partition reported', async () => {
    const caughtUp = [0, 1, 2].every((p) =>
      new RegExp(`rx_event_bus_consumer_lag\\{topic="${topic}",partition="${p}"\\} 0\n`).test(metrics),
    );
    if (caughtUp) return true;
    metrics = (await viaKafka.app.inject({ method: 'GET', url: '/metrics' })).body;
    return false;
  });
});

const dispense = (n: number, icn = '1012345678V123456') => ({
  messageId: `eb-${n}`,
  stationNumber: '521',
  patient: { icn, mhvCorrelationId: '10123456' },
  prescription: { rxNumber: `77${String(n).padStart(5, '0')}`, fillNumber: 0, drugName: 'ASPIRIN 81MG TAB', quantity: 30 },
  shippedAt: '2026-05-14T15:00:00Z',
  carrier: 'UPS',
  trackingNumber: `1Z99999903${String(n).padStart(8, '0')}`,
});
const event = (n: number) => ({ eventId: `eb-${n}`, dispense: dispense(n) });

t.test('a record published twice, and records read again by a consumer that never committed, store nothing twice', async (t) => {
  const first = await eventBusApp(t, 3);
  const { broker, topic } = first;
  const publisher = await testPublisher(t, first);
  // The producer has no idempotence: the same event can arrive twice, at two offsets.
  await publisher.publish([event(1), event(2), event(3)], { partition: 0 });
  await publisher.publish([event(2)], { partition: 0 });
  await waitFor('4 records stored', async () => (await countOf(first.db.sql, `select count(*)::int as n from inbound_message`)) === 4);
  t.equal(await countOf(first.db.sql, 'select count(*)::int as n from medication_dispense'), 3, 'the event sent twice is one dispense');
  const [second] = await first.db.sql`select outcome, error from inbound_message where event_offset = 3`;
  t.same(second, { outcome: 'accepted', error: null }, 'the copy is kept as a body, its dispense a duplicate');
  await first.app.close();

  // A consumer whose offsets were never committed (stopped between its transaction and its commit;
  // here: a new group on the same database) reads every record again.
  const again = await testApp(t, { ...eventBusSettings(broker.plaintext, first.registry, topic, uniqueName('group')) }, { db: first.db });
  await waitFor('the records read again', async () =>
    /rx_event_bus_records_total\{outcome="redelivered"\} 4/.test((await again.app.inject({ method: 'GET', url: '/metrics' })).body),
  );
  t.equal(await countOf(first.db.sql, 'select count(*)::int as n from inbound_message'), 4, 'no record stored twice');
  t.equal(await countOf(first.db.sql, 'select count(*)::int as n from medication_dispense'), 3, 'no dispense stored twice');
});

t.test('a poison record is kept with its reason, counted, committed past, and the records after it are ingested', async (t) => {
  const bus = await eventBusApp(t, 1);
  const { broker, topic, group, app, db } = bus;
  const publisher = await testPublisher(t, bus);
  await publisher.publish([event(10)]);
  const invalid = { ...dispense(11), patient: { icn: 'not-an-icn' } };
  await publisher.publishRaw([
    Buffer.from('{"not":"avro", "ssn": "666-12-3456"}'),
    frame(4242, Buffer.from('whatever')),
    frame(publisher.schemaId, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])),
    encodeDispenseEvent(publisher.schemaId, { eventId: 'eb-11', dispense: invalid }),
  ]);
  await publisher.publish([event(12)]);
  await waitFor('6 records kept', async () => (await countOf(db.sql, 'select count(*)::int as n from inbound_message')) === 6);
  const kept = await db.sql`select event_offset::int as offset, outcome, error, body from inbound_message order by event_offset`;
  t.same(
    kept.map((r) => r.outcome),
    ['accepted', 'rejected', 'rejected', 'rejected', 'rejected', 'accepted'],
    'good records either side of the poison ones',
  );
  t.match(kept[1]!.error, /not Confluent Avro: first byte 0x7b/);
  t.notMatch(Buffer.from(kept[1]!.body as string, 'base64').toString('latin1'), /666-12-3456/, 'the SSN in the garbage is masked');
  t.match(Buffer.from(kept[1]!.body as string, 'base64').toString('latin1'), /"not":"avro"/, 'the rest kept byte for byte');
  t.match(kept[2]!.error, /unknown schema id 4242/);
  t.match(kept[3]!.error, /does not decode with schema id/);
  t.match(kept[4]!.error, /patient\.icn/);
  t.equal(
    await countOf(db.sql, 'select count(*)::int as n from medication_dispense'),
    2,
    'the good records before and after are dispenses',
  );
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  for (const outcome of ['not_avro', 'unknown_schema', 'undecodable', 'invalid_dispense']) {
    t.match(metrics, new RegExp(`rx_event_bus_records_total\\{outcome="${outcome}"\\} 1`), outcome);
  }
  await waitFor('the offset committed past them all', async () => (await committedOffsets(broker.plaintext, group, topic)).get(0) === 6n);
});

t.test('an unreachable schema registry holds the records uncommitted until it answers', async (t) => {
  const bus = await eventBusApp(t, 1);
  const { broker, topic, group, db, registry, logs } = bus;
  const publisher = await testPublisher(t, bus);
  registry.setUnavailable(true);
  await publisher.publish([event(20), event(21)]);
  await waitFor('a retry logged', () => logs.text.includes('the schema registry unavailable'));
  t.equal(await countOf(db.sql, 'select count(*)::int as n from inbound_message'), 0, 'nothing stored, nothing kept as rejected');
  t.equal((await committedOffsets(broker.plaintext, group, topic)).get(0), undefined, 'nothing committed');
  registry.setUnavailable(false);
  await waitFor('both stored', async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 2);
  await waitFor('committed', async () => (await committedOffsets(broker.plaintext, group, topic)).get(0) === 2n);
});

t.test('npm run event-bus:publish publishes the sample files as Avro records, registering the schema', async (t) => {
  const { broker, topic, db, registry } = await eventBusApp(t, 1);
  const files = ['rds-o13-one-package-two-rx.hl7', 'dispense-events.json'].map((f) => `${samplesDir}${f}`);
  const child = spawn(process.execPath, ['--no-warnings', 'src/event-bus/publish-cli.ts', ...files], {
    cwd: new URL('../../', import.meta.url).pathname,
    env: {
      PATH: process.env.PATH ?? '',
      EVENT_BUS_BROKERS: broker.plaintext,
      EVENT_BUS_SCHEMA_REGISTRY_URL: registry.url,
      EVENT_BUS_TOPIC: topic,
      EVENT_BUS_AUTH: 'none',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  t.equal(await new Promise((resolve) => child.on('close', resolve)), 0, output);
  t.match(output, new RegExp(`rds-o13-one-package-two-rx.hl7: 1 record published to ${topic} \\(schema id 1\\)`));
  const records = 1 + eventsOfFile(files[1]!).length;
  await waitFor(
    'the published records stored',
    async () => (await countOf(db.sql, `select count(*)::int as n from inbound_message where outcome = 'accepted'`)) === records,
  );
  const subjects = (await fetch(`${registry.url}/subjects/${topic}-value/versions/1`).then((r) => r.json())) as { id: number };
  t.equal(subjects.id, 1, 'the value schema registered under <topic>-value');
});
