// Records from a real Kafka broker become the same dispenses and emails as the HTTP path; a record
// read twice stores nothing twice; a record that cannot be read is kept with its reason and the
// records after it are still ingested.
import t from 'tap';
import { eventsOfFile, createPublisher, type Publisher } from '../../src/event-bus/publish.ts';
import { internalAuth, testApp, type TestApp } from '../helpers/app.ts';
import { postSample, samples, samplesDir, sampleSsns } from '../ingest/fixtures.ts';
import { createTopic, eventBusSettings, kafkaSkip, testBroker, testRegistry, uniqueName, waitFor } from '../helpers/kafka.ts';

t.setTimeout(300_000);
if (kafkaSkip) t.plan(0, kafkaSkip);

const job = (app: TestApp['app'], name: string) =>
  app.inject({ method: 'POST', url: `/v1/jobs/${name}`, headers: internalAuth }).then((r) => r.json());

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

async function eventBusApp(t: { teardown(fn: () => unknown): void }, topic: string, group: string, extra: Record<string, string> = {}) {
  const broker = await testBroker();
  const registry = await testRegistry(t);
  const app = await testApp(t, { GROUPING_QUIET_MINUTES: '0', ...eventBusSettings(broker.plaintext, registry, topic, group), ...extra });
  return { broker, registry, ...app };
}

async function publisherFor(t: { teardown(fn: () => unknown): void }, brokers: string, registryUrl: string, topic: string): Promise<Publisher> {
  const publisher = await createPublisher({ brokers: [brokers], registryUrl, topic });
  t.teardown(() => publisher.close());
  return publisher;
}

const counted = async (sql: TestApp['db']['sql'], query: string) => ((await sql.unsafe(query))[0] as unknown as { n: number }).n;

t.test('records of every sample become the same dispenses and emails as the HTTP path', async (t) => {
  const topic = uniqueName('dispenses');
  const broker = await testBroker();
  await createTopic(broker.plaintext, topic, 3);
  const viaKafka = await eventBusApp(t, topic, uniqueName('group'));
  const viaHttp = await testApp(t, { GROUPING_QUIET_MINUTES: '0' });

  const publisher = await publisherFor(t, broker.plaintext, viaKafka.registry.url, topic);
  for (const sample of samples) {
    await postSample(viaHttp.app, sample);
    await publisher.publish(eventsOfFile(`${samplesDir}${sample.file}`));
  }
  const records = samples.reduce((n, s) => n + eventsOfFile(`${samplesDir}${s.file}`).length, 0);
  await waitFor('every record stored', async () =>
    (await counted(viaKafka.db.sql, `select count(*)::int as n from inbound_message where source = 'event-bus'`)) === records)
    .catch((e) => { console.error(viaKafka.logs.text); throw e; });

  const kafka = await dispensesAndEmails(viaKafka.db.sql);
  t.ok(kafka.dispenses.length > 5, `${kafka.dispenses.length} dispenses`);
  t.same(kafka.dispenses, (await dispensesAndEmails(viaHttp.db.sql)).dispenses, 'the same dispenses, field for field');

  for (const { app } of [viaKafka, viaHttp]) {
    await job(app, 'grouping');
    await job(app, 'send');
  }
  const emails = (await dispensesAndEmails(viaKafka.db.sql)).emails;
  t.ok(emails.length >= 4, `${emails.length} emails`);
  t.same(emails, (await dispensesAndEmails(viaHttp.db.sql)).emails, 'the same emails, to the same veterans, with the same prescriptions');

  const [kept] = await viaKafka.db.sql`
    select count(*)::int as n, count(*) filter (where event_topic = ${topic} and event_offset is not null)::int as positioned,
           bool_or(body ~ ${sampleSsns.join('|')}) as ssn
      from inbound_message where source = 'event-bus'`;
  t.same(kept, { n: records, positioned: records, ssn: false }, 'each record kept with its position, SSNs masked');
  const metrics = (await viaKafka.app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(metrics, /rx_event_bus_records_total\{outcome="stored"\} \d+/);
  t.match(metrics, /rx_event_bus_records_total\{outcome="invalid_dispense"\} 2/, 'not-hl7.txt and truncated.hl7 are invalid dispenses');
  t.match(metrics, new RegExp(`rx_event_bus_consumer_lag\\{topic="${topic}",partition="2"\\} 0`), 'nothing left to read');
});
