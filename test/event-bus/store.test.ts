// A batch of event-bus records stored set-based, against real Postgres: in one statement when every
// dispense is new, else in one transaction. Each record's body kept once at its position, each
// dispense stored once whichever records carry it, and every record that cannot be read kept with
// its reason.
import t from 'tap';
import { keptBytes, type DecodedRecord } from '../../src/event-bus/records.ts';
import { prepareBatch, storeBatch, type BatchRecord } from '../../src/event-bus/store.ts';
import { testDatabase } from '../support/database.ts';
import { countOf } from '../support/kafka.ts';
import { readSample, sampleSsns } from '../support/ingest.ts';

const topic = 'cmop_medication_dispense';
const dispense = (n: number, icn = '1012345678V123456') => ({
  messageId: `st-${n}`,
  stationNumber: '521',
  patient: { icn, mhvCorrelationId: '10123456' },
  prescription: { rxNumber: `66${String(n).padStart(5, '0')}`, fillNumber: 0, drugName: 'ASPIRIN 81MG TAB', quantity: 30 },
  shippedAt: '2026-05-14T15:00:00Z',
  carrier: 'UPS',
  trackingNumber: `1Z99999905${String(n).padStart(8, '0')}`,
});
const json = (value: unknown): DecodedRecord => ({ kind: 'dispense', contentType: 'application/json', body: JSON.stringify(value) });
const at = (offset: number, decoded: DecodedRecord, partition = 0): BatchRecord => ({
  position: { topic, partition, offset: BigInt(offset) },
  decoded,
});

t.test('a batch mixing good, poison, duplicate and redelivered records stores each good dispense once', async (t) => {
  const db = await testDatabase(t);
  const first = await storeBatch(db.sql, [at(0, json(dispense(1)))]);
  t.same(first.outcomes, { stored: 1, duplicate: 0, redelivered: 0, not_avro: 0, unknown_schema: 0, undecodable: 0, invalid_dispense: 0 });

  const garbage = Buffer.from(`{"not":"avro","ssn":"${sampleSsns[0]}"}`);
  const batch = [
    at(0, json(dispense(1))), // read again: its position is stored
    at(1, json(dispense(2))),
    at(2, { kind: 'bad', outcome: 'not_avro', reason: 'not Confluent Avro: first byte 0x7b', ...keptBytes(garbage) }),
    at(3, json(dispense(1))), // the producer sent a stored event again, at another offset
    at(4, json(dispense(2))), // and an event of this batch again, in the same batch
    at(5, { kind: 'dispense', contentType: 'application/hl7-v2', body: readSample('rds-o13-one-package-two-rx.hl7') }),
    at(6, json({ ...dispense(3), patient: { icn: 'not-an-icn' } })),
    at(0, json(dispense(4)), 1),
  ];
  const stored = await storeBatch(db.sql, batch);
  t.same(stored.outcomes, { stored: 3, duplicate: 2, redelivered: 1, not_avro: 1, unknown_schema: 0, undecodable: 0, invalid_dispense: 1 });
  t.same(stored.dispenses, { inserted: 4, cancelled: 0, unprocessable: 0, duplicate: 2, rejected: 1 });

  const dispenses = await db.sql`
    select d.rx_number, m.event_partition, m.event_offset::int as event_offset
      from medication_dispense d join inbound_message m on m.id = d.inbound_message_id
     order by m.event_partition, m.event_offset, d.rx_number`;
  t.equal(dispenses.length, 5, 'the five good dispenses, each once');
  t.same(
    dispenses.filter((d) => d.rx_number.startsWith('66')).map((d) => [d.rx_number, d.event_partition, d.event_offset]),
    [
      ['6600001', 0, 0],
      ['6600002', 0, 1],
      ['6600004', 1, 0],
    ],
    'each from the first record that carried it',
  );
  t.same(
    dispenses.filter((d) => !d.rx_number.startsWith('66')).map((d) => d.event_offset),
    [5, 5],
    "the HL7 record's two",
  );

  const kept = await db.sql`
    select event_partition, event_offset::int as event_offset, outcome, message_count, error, body, processed_at is not null as processed
      from inbound_message order by event_partition, event_offset`;
  t.same(
    kept.map((m) => [m.event_partition, m.event_offset, m.outcome]),
    [
      [0, 0, 'accepted'],
      [0, 1, 'accepted'],
      [0, 2, 'rejected'],
      [0, 3, 'accepted'],
      [0, 4, 'accepted'],
      [0, 5, 'accepted'],
      [0, 6, 'rejected'],
      [1, 0, 'accepted'],
    ],
    'every record kept once at its position, the copies too',
  );
  t.ok(
    kept.every((m) => m.processed),
    'each with its outcome recorded',
  );
  t.match(kept[2]!.error, /not Confluent Avro/);
  t.notMatch(
    Buffer.from(kept[2]!.body as string, 'base64').toString('latin1'),
    new RegExp(sampleSsns[0]!),
    'the SSN in the poison record masked',
  );
  t.match(kept[6]!.error, /patient\.icn/);
  t.equal(kept[5]!.message_count, 2, "the HL7 record's two messages");
  t.equal(
    await countOf(db.sql, 'select count(*)::int as n from tracking_email_draft'),
    await countOf(db.sql, 'select count(distinct patient_icn)::int as n from medication_dispense'),
    'a draft for each veteran with new pending dispenses',
  );
});

t.test('a redelivered record in a batch of new ones is skipped by the one-statement store', async (t) => {
  const db = await testDatabase(t);
  await storeBatch(db.sql, [at(0, json(dispense(1))), at(1, json(dispense(2)))]);
  const stored = await storeBatch(db.sql, [
    at(1, json(dispense(2))), // read again after a rebalance: its position is stored
    at(2, json(dispense(3))),
    at(0, { kind: 'dispense', contentType: 'application/hl7-v2', body: readSample('rds-o13-one-package-two-rx.hl7') }, 2),
    at(3, json({ ...dispense(4), patient: { icn: 'not-an-icn' } })),
  ]);
  t.same(stored.outcomes, { stored: 2, duplicate: 0, redelivered: 1, not_avro: 0, unknown_schema: 0, undecodable: 0, invalid_dispense: 1 });
  t.same(stored.dispenses, { inserted: 3, cancelled: 0, unprocessable: 0, duplicate: 0, rejected: 1 });
  const dispenses = await db.sql`
    select m.event_partition, m.event_offset::int as event_offset, count(*)::int as dispenses
      from medication_dispense d join inbound_message m on m.id = d.inbound_message_id
     group by 1, 2 order by 1, 2`;
  t.same(
    dispenses.map((d) => [d.event_partition, d.event_offset, d.dispenses]),
    [
      [0, 0, 1],
      [0, 1, 1],
      [0, 2, 1],
      [2, 0, 2],
    ],
    'each dispense names the record it came in, the redelivered one stored once',
  );
  t.equal(await countOf(db.sql, 'select count(*)::int as n from inbound_message'), 5, 'every record kept once');
  // Each attempt to insert a body takes an id: one statement took the batch's four, where the
  // transaction that resolves conflicts would have taken four more after it.
  t.equal(await countOf(db.sql, 'select max(id)::int as n from inbound_message'), 6, 'stored by the one statement, not the long way');
});

t.test('a position given twice in a batch of new records is stored once, for its first record', async (t) => {
  const db = await testDatabase(t);
  const stored = await storeBatch(db.sql, [at(0, json(dispense(1))), at(1, json(dispense(2))), at(0, json(dispense(3)))]);
  t.same(stored.outcomes, { stored: 2, duplicate: 0, redelivered: 1, not_avro: 0, unknown_schema: 0, undecodable: 0, invalid_dispense: 0 });
  const rows = await db.sql`
    select m.event_offset::int as event_offset, d.rx_number
      from medication_dispense d join inbound_message m on m.id = d.inbound_message_id order by 1`;
  t.same(
    rows.map((r) => [r.event_offset, r.rx_number]),
    [
      [0, '6600001'],
      [1, '6600002'],
    ],
  );
});

t.test('a resend naming another veteran is kept for review against the record that sent it', async (t) => {
  const db = await testDatabase(t);
  await storeBatch(db.sql, [at(0, json(dispense(1)))]);
  const stored = await storeBatch(db.sql, [
    at(1, json(dispense(2))),
    at(2, json(dispense(1, '1098765432V654321'))),
    at(3, json(dispense(3))),
  ]);
  t.same(stored.outcomes.stored, 2);
  t.same(stored.outcomes.duplicate, 1);
  const [conflict] = await db.sql`
    select m.event_offset::int as event_offset, c.sent_patient_icn
      from medication_dispense_conflict c join inbound_message m on m.id = c.inbound_message_id`;
  t.same(conflict, { event_offset: 2, sent_patient_icn: '1098765432V654321' });
  const errors = await db.sql`select event_offset::int as event_offset, error from inbound_message where error is not null`;
  t.equal(errors.length, 1, 'only that record names the conflict');
  t.match(errors[0], { event_offset: 2, error: /already received with another ICN or carrier/ });
  t.equal(
    await countOf(db.sql, `select count(*)::int as n from medication_dispense where patient_icn = '1012345678V123456'`),
    3,
    'the stored dispense unchanged',
  );
});

t.test('a batch of poison records only keeps each with its reason', async (t) => {
  const db = await testDatabase(t);
  const stored = await storeBatch(db.sql, [
    at(0, { kind: 'bad', outcome: 'unknown_schema', reason: 'unknown schema id 4242', ...keptBytes(Buffer.from('x')) }),
    at(1, { kind: 'dispense', contentType: 'application/hl7-v2', body: readSample('bad/not-hl7.txt') }),
  ]);
  t.same(stored.outcomes, { stored: 0, duplicate: 0, redelivered: 0, not_avro: 0, unknown_schema: 1, undecodable: 0, invalid_dispense: 1 });
  const kept = await db.sql`select outcome, error is not null as has_error from inbound_message order by event_offset`;
  t.same(
    [...kept],
    [
      { outcome: 'rejected', has_error: true },
      { outcome: 'rejected', has_error: true },
    ],
  );
  t.equal(await countOf(db.sql, 'select count(*)::int as n from medication_dispense'), 0);
});

t.test('a rejected JSON record is stored with its SSNs masked as any JSON body is', async (t) => {
  const db = await testDatabase(t);
  const event = JSON.stringify({ eventId: 'both-set', hl7Message: 'MSH|...', dispense: { patient: { ssn: 666001234 } } });
  await storeBatch(db.sql, [
    at(0, {
      kind: 'bad',
      outcome: 'invalid_dispense',
      reason: 'exactly one of hl7Message and dispense must be set',
      contentType: 'application/json',
      body: event,
    }),
  ]);
  const [kept] = await db.sql<{ body: string }[]>`select body from inbound_message`;
  t.notMatch(kept!.body, /666001234/, 'the SSN is not stored');
  t.match(kept!.body, /"ssn":"XXXXXXXXX"/, 'masked in place, the body still JSON');
});

t.test('a batch is parsed 25 records at a time, the event loop free between each 25', async (t) => {
  const records = Array.from({ length: 60 }, (_, i) => at(i, json(dispense(i))));
  // Turns of the event loop taken while the batch is read: one chain of setImmediate callbacks.
  let reading = true;
  let turns = 0;
  const turn = () => {
    if (!reading) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  const prepared = await prepareBatch(records);
  reading = false;
  t.equal(prepared.read.summaries.length, 60, 'every record read');
  t.ok(turns >= 3, `the event loop turned between the 25s (${turns} turns)`);
  const db = await testDatabase(t);
  t.equal((await storeBatch(db.sql, prepared)).outcomes.stored, 60);
});
