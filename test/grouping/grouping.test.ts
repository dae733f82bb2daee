import t from 'tap';
import { groupReadyVeterans, runGrouping } from '../../src/grouping/grouping-job.ts';
import { groupReadyDrafts } from '../support/grouping.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { connect } from '../../src/db/connect.ts';
import { AdvisoryLock } from '../../src/db/locks.ts';
import { testDatabase } from '../support/database.ts';
import { dispenseRecord, icn, insertDispenses, insertTrackingEmail } from '../support/fixtures.ts';
import { insertDispenses as ingestDispenses, insertInboundMessage } from '../../src/ingest/repository.ts';

const log = createLogger('silent');
const group = (sql: Parameters<typeof runGrouping>[0]['sql'], env: Record<string, string> = {}) =>
  runGrouping({ sql, config: testConfig(env), log });

t.test('one email per veteran, packages by tracking number, last four of each Rx', async (t) => {
  const { sql } = await testDatabase(t);
  const alpha = '1012345678V123456';
  await insertDispenses(sql, [
    {
      patient_icn: alpha,
      rx_number: '2719100',
      tracking_number: '1Z9999990312345678',
      carrier: 'UPS',
      shipped_at: new Date('2026-05-14T16:05:00Z'),
    },
    {
      patient_icn: alpha,
      rx_number: '2719043',
      fill_number: 1,
      tracking_number: '1Z9999990312345678',
      carrier: 'UPS',
      shipped_at: new Date('2026-05-14T16:05:00Z'),
    },
    {
      patient_icn: alpha,
      rx_number: '7004520',
      tracking_number: '771234567890',
      carrier: 'FEDEX',
      shipped_at: new Date('2026-05-15T10:30:00Z'),
    },
    { patient_icn: alpha, rx_number: '5550001', tracking_number: 'ABC-1', carrier: 'UNK', shipped_at: new Date('2026-05-15T11:00:00Z') },
    { patient_icn: '1098765432V654321', rx_number: '7004512', tracking_number: '9400100000000000000012', carrier: 'USPS' },
    { patient_icn: '1098765432V654321', rx_number: '7004513', tracking_number: '', carrier: 'UNK', state: 'cancelled' },
    { patient_icn: null, rx_number: '555', tracking_number: '1Z999', state: 'unprocessable' },
  ]);

  const result = await group(sql);
  t.same(result, { emailsCreated: 2, dispensesGrouped: 5, dispensesExcluded: 0, dispensesHeld: 0, skipped: false });

  const [email] = await sql`select * from tracking_email where patient_icn = ${alpha}`;
  t.equal(email!.state, 'queued');
  t.equal(email!.mhv_correlation_id, '10123456');
  t.equal(email!.package_count, 3);
  t.equal(email!.prescription_count, 4);
  t.same(email!.personalisation, {
    tracking_info: [
      '**UPS** tracking number: [1Z9999990312345678](https://www.ups.com/track?tracknum=1Z9999990312345678)\n' +
        '- Prescription ending in 9043\n- Prescription ending in 9100',
      '**FedEx** tracking number: [771234567890](https://www.fedex.com/fedextrack/?trknbr=771234567890)\n' +
        '- Prescription ending in 4520',
      '**Carrier not provided** tracking number: ABC\\-1\n- Prescription ending in 0001',
    ].join('\n\n'),
    package_count: '3',
    prescription_count: '4',
    shipped_date: 'May 15, 2026',
  });

  const states = await sql`select rx_number, state, tracking_email_id is not null as in_email from medication_dispense order by rx_number`;
  t.same(
    states.map((r) => [r.rx_number, r.state, r.in_email]),
    [
      ['2719043', 'grouped', true],
      ['2719100', 'grouped', true],
      ['555', 'unprocessable', false],
      ['5550001', 'grouped', true],
      ['7004512', 'grouped', true],
      ['7004513', 'cancelled', false],
      ['7004520', 'grouped', true],
    ],
  );
  t.same(
    await group(sql),
    { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 0, dispensesHeld: 0, skipped: false },
    'nothing left to group',
  );
});

t.test('USPS and DHL links; drug names only when configured', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    {
      patient_icn: icn(1),
      rx_number: '1234567',
      tracking_number: '9400100000000000000012',
      carrier: 'USPS',
      drug_name: 'METFORMIN HCL 500MG TAB',
    },
    { patient_icn: icn(1), rx_number: '1234568', tracking_number: '1234567890', carrier: 'DHL', drug_name: 'LISINOPRIL 10MG TAB' },
  ]);
  await group(sql, { EMAIL_INCLUDE_DRUG_NAMES: 'true' });
  const [email] = await sql`select personalisation from tracking_email`;
  t.equal(
    email!.personalisation.tracking_info,
    // Same shipment time: ordered by tracking number.
    '**DHL** tracking number: [1234567890](https://www.dhl.com/us-en/home/tracking/tracking-express.html?tracking-id=1234567890)\n' +
      '- Prescription ending in 4568: LISINOPRIL 10MG TAB\n\n' +
      '**USPS** tracking number: [9400100000000000000012](https://tools.usps.com/go/TrackConfirmAction?tLabels=9400100000000000000012)\n' +
      '- Prescription ending in 4567: METFORMIN HCL 500MG TAB',
  );
});

// A package's fills can come from different messages, one naming the carrier and one not (a missing
// ZR2 is UNK): the package is its known carrier's, with that carrier's tracking link.
t.test('a package named by its known carrier when another of its fills came without one', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: '1Z9999990312345678', carrier: 'UNK' },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
    { patient_icn: icn(1), rx_number: '1000003', tracking_number: '9400100000000000000012', carrier: 'USPS' },
    { patient_icn: icn(1), rx_number: '1000004', tracking_number: '9400100000000000000012', carrier: 'UNK' },
    { patient_icn: icn(1), rx_number: '1000005', tracking_number: 'ABC123', carrier: 'UNK' },
  ]);
  t.same(await group(sql), { emailsCreated: 1, dispensesGrouped: 5, dispensesExcluded: 0, dispensesHeld: 0, skipped: false });
  const [email] = await sql`select package_count, prescription_count, personalisation from tracking_email`;
  t.equal(email!.package_count, 3);
  t.equal(email!.prescription_count, 5);
  t.equal(
    email!.personalisation.tracking_info,
    // Same shipment time: ordered by tracking number.
    '**UPS** tracking number: [1Z9999990312345678](https://www.ups.com/track?tracknum=1Z9999990312345678)\n' +
      '- Prescription ending in 0001\n- Prescription ending in 0002\n\n' +
      '**USPS** tracking number: [9400100000000000000012](https://tools.usps.com/go/TrackConfirmAction?tLabels=9400100000000000000012)\n' +
      '- Prescription ending in 0003\n- Prescription ending in 0004\n\n' +
      '**Carrier not provided** tracking number: ABC123\n- Prescription ending in 0005',
  );
});

// The email, the AAL detail and the shadow comparison name a package's carrier by one rule
// (package_carrier): the known carrier over UNK, and of two named carriers the same one everywhere.
// Grouping and the AAL detail write the rule with the built-in min() on their hot paths; this holds
// the email, the detail and the aggregate equal.
t.test('the email and the AAL detail name each package by the same carrier', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: '1Z9999990312345678', carrier: 'UNK' },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
    { patient_icn: icn(1), rx_number: '1000003', tracking_number: '9400100000000000000012', carrier: 'USPS' },
    { patient_icn: icn(1), rx_number: '1000004', tracking_number: '9400100000000000000012', carrier: 'UPS' },
    { patient_icn: icn(1), rx_number: '1000005', tracking_number: 'ABC123', carrier: 'UNK' },
  ]);
  await group(sql);
  const [email] = await sql<{ id: string; tracking_info: string; detail: string }[]>`
    select id, personalisation->>'tracking_info' as tracking_info, aal_detail(id) as detail from tracking_email`;
  const emailCarriers = [...email!.tracking_info.matchAll(/^\*\*(.+)\*\* tracking number: \[?([A-Z0-9]+)/gm)].map(
    ([, carrier, number]) => `${number} ${carrier}`,
  );
  t.same(emailCarriers.sort(), ['1Z9999990312345678 UPS', '9400100000000000000012 UPS', 'ABC123 Carrier not provided']);
  t.equal(
    email!.detail,
    'Packages: UNK ABC123 (Rx ending 0005); UPS 1Z9999990312345678 (Rx ending 0001, 0002); UPS 9400100000000000000012 (Rx ending 0003, 0004)',
  );
  const [aggregate] = await sql<{ none: string; unknown: string; known: string; first: string }[]>`
    select (select package_carrier(c) from unnest(array[]::text[]) c) as none,
           (select package_carrier(c) from unnest(array['UNK', 'UNK']) c) as unknown,
           (select package_carrier(c) from unnest(array['UNK', 'FEDEX', 'UNK']) c) as known,
           (select package_carrier(c) from unnest(array['USPS', 'UNK', 'DHL']) c) as first`;
  t.same(aggregate, { none: 'UNK', unknown: 'UNK', known: 'FEDEX', first: 'DHL' });
});

t.test('waits for a quiet period, but not longer than the maximum wait', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    // Still arriving: newest is 10 minutes old, oldest 30.
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1', arrived_minutes_ago: 30 },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'T1', arrived_minutes_ago: 10 },
    // Quiet for 61 minutes.
    { patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T2', arrived_minutes_ago: 61 },
    // Never quiet, but the oldest has waited a day.
    { patient_icn: icn(3), rx_number: '3000001', tracking_number: 'T3', arrived_minutes_ago: 1441 },
    { patient_icn: icn(3), rx_number: '3000002', tracking_number: 'T3', arrived_minutes_ago: 1 },
  ]);
  t.same(await group(sql), { emailsCreated: 2, dispensesGrouped: 3, dispensesExcluded: 0, dispensesHeld: 0, skipped: false });
  const pending = await sql`select patient_icn from medication_dispense where state = 'pending'`;
  t.same(new Set(pending.map((r) => r.patient_icn)), new Set([icn(1)]));
});

t.test('DELIVERY_START_AT with no hold leaves earlier shipments to MHV', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1', shipped_at: new Date('2026-06-01T11:59:59Z') },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'T2', shipped_at: new Date('2026-06-01T12:00:00Z') },
    { patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T3', shipped_at: new Date('2026-05-30T08:00:00Z') },
  ]);
  const result = await group(sql, { DELIVERY_START_AT: '2026-06-01T12:00:00Z', CUTOVER_HOLD_HOURS: '0' });
  t.same(result, { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 2, dispensesHeld: 0, skipped: false });
  const rows = await sql`select rx_number, state, state_reason from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['1000001', 'excluded'],
      ['1000002', 'grouped'],
      ['2000001', 'excluded'],
    ],
  );
  t.match(rows[0]!.state_reason, /DELIVERY_START_AT/);
  const [email] = await sql`select personalisation from tracking_email`;
  t.notMatch(email!.personalisation.tracking_info, /ending in 0001\b.*\n.*T1/s);
  t.match(email!.personalisation.tracking_info, /T2/);
  const excluded = await sql`select tracking_email_id from medication_dispense where state = 'excluded'`;
  t.same(
    excluded.map((r) => r.tracking_email_id),
    [null, null],
    'an excluded dispense names no draft, so no email',
  );
  const [left] = await sql`select count(*)::int as drafts from tracking_email_draft`;
  t.equal(left!.drafts, 0, 'the draft left with nothing pending is gone, and became no email');
});

t.test('shadow records what would be sent; off groups nothing', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' }]);
  t.same((await group(sql, { DELIVERY_MODE: 'off' })).emailsCreated, 0);
  t.same((await group(sql, { DELIVERY_MODE: 'shadow' })).emailsCreated, 1);
  const [email] = await sql`select state, personalisation from tracking_email`;
  t.equal(email!.state, 'shadowed');
  t.match(email!.personalisation.tracking_info, /Prescription ending in 0001/);
});

t.test('three instances grouping at once: every dispense in exactly one email, one email per veteran', async (t) => {
  const { sql, url } = await testDatabase(t);
  const dispenses = [];
  for (let v = 0; v < 500; v++) {
    for (let k = 0; k < 4; k++)
      dispenses.push({ patient_icn: icn(v), rx_number: `${v}${k}`.padStart(7, '0'), tracking_number: `TRK${v}-${k % 2}` });
  }
  await insertDispenses(sql, dispenses);
  const instances = [connect(url, { max: 2 }), connect(url, { max: 2 }), connect(url, { max: 2 })];
  t.teardown(() => Promise.all(instances.map((i) => i.end())));
  // Small batches force many interleaved runs.
  const runUntilDone = async (instance: (typeof instances)[number]) => {
    for (let i = 0; i < 200; i++) {
      const r = await group(instance, { GROUPING_BATCH_SIZE: '25' });
      if (!r.skipped && r.emailsCreated === 0) return;
    }
  };
  await Promise.all(instances.map(runUntilDone));
  const [counts] = await sql`
    select (select count(*) from tracking_email) as emails,
           (select count(distinct patient_icn) from tracking_email) as veterans,
           (select count(*) from medication_dispense where state = 'grouped' and tracking_email_id is not null) as grouped,
           (select coalesce(sum(prescription_count), 0) from tracking_email) as listed`;
  t.same(counts, { emails: 500, veterans: 500, grouped: 2000, listed: 2000 });
});

t.test('a veteran whose draft an ingest holds is passed by, not waited for, and grouped whole by a later run', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'T2' },
  ]);
  await insertDispenses(sql, [{ patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T3' }]);
  // A resend of an event already stored, still inside its ingest transaction: it holds the
  // veteran's draft, and the conflict clause locks the stored (pending) row, until that
  // transaction ends, though it changes nothing.
  const ingest = await sql.reserve();
  t.teardown(() => ingest.release());
  await ingest`begin`;
  const inbound = await insertInboundMessage(ingest, { source: 'http', contentType: 'application/json', maskedBody: '{}' });
  const resend = await ingestDispenses(ingest, inbound, [cmopDispense(icn(1), '1000002', 'T2')]);
  t.equal(resend.stored.size, 0, 'the resend is a duplicate');

  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('grouping waited for the lock')), 5_000).unref());
  t.same(
    await Promise.race([group(sql), timeout]),
    { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 0, dispensesHeld: 0, skipped: false },
    'the other veteran is grouped',
  );
  const [first] = await sql`select patient_icn from tracking_email`;
  t.equal(first!.patient_icn, icn(2));
  const held = await sql`select state, tracking_email_id from medication_dispense where patient_icn = ${icn(1)}`;
  t.same(
    held.map((r) => r.state),
    ['pending', 'pending'],
    'the held veteran waits, whole',
  );

  await ingest`commit`;
  t.same(await group(sql), { emailsCreated: 1, dispensesGrouped: 2, dispensesExcluded: 0, dispensesHeld: 0, skipped: false });
  const [second] = await sql`select id, prescription_count, personalisation from tracking_email where patient_icn = ${icn(1)}`;
  t.equal(second!.prescription_count, 2, 'one email for both dispenses');
  t.match(
    second!.personalisation.tracking_info,
    /tracknum=T1\)\n- Prescription ending in 0001\n\n.*tracknum=T2\)\n- Prescription ending in 0002$/s,
  );
  const grouped = await sql`select state, tracking_email_id from medication_dispense where patient_icn = ${icn(1)}`;
  t.same(
    grouped.map((r) => [r.state, r.tracking_email_id]),
    [
      ['grouped', second!.id],
      ['grouped', second!.id],
    ],
  );
  t.same(
    held.map((r) => r.tracking_email_id),
    [second!.id, second!.id],
    'the email has the id the pending dispenses named',
  );
});

t.test('email ids are time-ordered UUIDs (version 7), later runs after earlier ones', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' }]);
  const before = Date.now();
  await group(sql);
  await new Promise((resolve) => setTimeout(resolve, 5));
  await insertDispenses(sql, [{ patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T2' }]);
  await group(sql);
  const emails = await sql<{ id: string; patient_icn: string }[]>`select id::text, patient_icn from tracking_email order by id`;
  t.same(
    emails.map((e) => e.patient_icn),
    [icn(1), icn(2)],
    'ordered by creation',
  );
  for (const { id } of emails) {
    t.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    t.ok(ms >= before - 1_000 && ms <= Date.now() + 1_000, 'the first 48 bits are the time in milliseconds');
  }
});

/** 60 veterans, three dispenses each in two packages, arriving oldest veteran first. */
function sixtyVeterans() {
  const dispenses = [];
  for (let v = 0; v < 60; v++) {
    for (let k = 0; k < 3; k++) {
      dispenses.push({
        patient_icn: icn(v),
        rx_number: `${v}${k}`.padStart(7, '0'),
        tracking_number: `TRK${v}-${k % 2}`,
        arrived_minutes_ago: 600 - v,
      });
    }
  }
  return dispenses;
}

t.test('a run splits its veterans across concurrent transactions: the same emails whatever the split', async (t) => {
  const emailsWith = async (concurrency: string, batch = '8') => {
    const { sql } = await testDatabase(t);
    await insertDispenses(sql, sixtyVeterans());
    const runs = [];
    for (;;) {
      const r = await group(sql, { GROUPING_BATCH_SIZE: batch, GROUPING_CONCURRENCY: concurrency });
      if (r.emailsCreated === 0) break;
      runs.push(r.emailsCreated);
    }
    const emails = await sql`
      select patient_icn, personalisation, package_count, prescription_count,
             (select count(*)::int from medication_dispense d where d.tracking_email_id = e.id) as dispenses
        from tracking_email e order by patient_icn`;
    return { runs, emails: emails.map((e) => ({ ...e })) };
  };
  const one = await emailsWith('1');
  t.same(one.runs, [8, 8, 8, 8, 8, 8, 8, 4], 'one transaction: batches of 8 veterans');
  t.equal(one.emails.length, 60);
  t.ok(one.emails.every((e) => e.dispenses === 3 && e.prescription_count === 3 && e.package_count === 2));
  for (const concurrency of ['2', '3', '8']) {
    const split = await emailsWith(concurrency);
    t.same(split.emails, one.emails, `${concurrency} transactions: the same 60 emails`);
    t.ok(
      split.runs.every((n) => n <= 8),
      `${concurrency} transactions: no run takes more than its batch (${split.runs.join(', ')})`,
    );
  }
  const tiny = await emailsWith('4', '1');
  t.same(tiny.emails, one.emails, 'a batch of one veteran with 4 transactions allowed: one at a time, every veteran grouped');
  t.ok(tiny.runs.every((n) => n === 1));
});

t.test('a partition another instance is grouping is skipped; the others are grouped', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, sixtyVeterans());
  const other = await sql.reserve();
  t.teardown(() => other.release());
  await other`begin`;
  await other`select pg_advisory_xact_lock(${AdvisoryLock.grouping}, 0)`;

  const config = testConfig({ GROUPING_CONCURRENCY: '2' });
  const partial = await groupReadyVeterans({ sql, config, log });
  t.equal(partial.result.skipped, false, 'partition 1 ran');
  t.equal(partial.filled, false);
  const grouped = partial.result.emailsCreated;
  t.ok(grouped > 0 && grouped < 60, `partition 1's veterans only (${grouped} of 60)`);
  const [held] = await sql`select count(*)::int as pending from medication_dispense where state = 'pending'`;
  t.equal(held!.pending, (60 - grouped) * 3, "partition 0's dispenses wait, none split");

  const single = await groupReadyVeterans({ sql, config: testConfig({ GROUPING_CONCURRENCY: '1' }), log });
  t.same(
    single.result,
    { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 0, dispensesHeld: 0, skipped: true },
    'one partition, held elsewhere: skipped',
  );

  await other`rollback`;
  const rest = await groupReadyVeterans({ sql, config, log });
  t.equal(rest.result.emailsCreated, 60 - grouped, 'released: the rest are grouped');
});

t.test('a run reports whether a partition took its whole share, so that the next starts at once', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, sixtyVeterans());
  const config = testConfig({ GROUPING_CONCURRENCY: '2', GROUPING_BATCH_SIZE: '40' });
  const first = await groupReadyVeterans({ sql, config, log });
  t.equal(first.filled, true, `a partition took its 20 (${first.result.emailsCreated} emails)`);
  const runs = [first];
  while (runs.at(-1)!.result.emailsCreated > 0) runs.push(await groupReadyVeterans({ sql, config, log }));
  t.equal(
    runs.reduce((n, r) => n + r.result.emailsCreated, 0),
    60,
  );
  t.equal(runs.at(-1)!.filled, false, 'nothing left: the timer paces the next run');
});

/** A dispense as CMOP sends it, for a veteran, through the ingest's repository. */
function cmopDispense(veteranIcn: string, rxNumber: string, trackingNumber: string) {
  return dispenseRecord(rxNumber, { veteranIcn, trackingNumber });
}

t.test('a dispense that arrives while grouping takes its veteran waits for the run and goes out in the next email', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' }]);
  const [draft] = await sql<{ id: string }[]>`select id from tracking_email_draft`;

  // The run's transaction, held open after it took the draft: the ingest of a new dispense for
  // the same veteran waits for it rather than joining an email already being written.
  const run = await sql.reserve();
  t.teardown(() => run.release());
  await run`begin`;
  const taken = await run`delete from tracking_email_draft returning id`;
  t.same(
    taken.map((r) => r.id),
    [draft!.id],
  );
  const inbound = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  let arrived = false;
  const ingest = ingestDispenses(sql, inbound, [cmopDispense(icn(1), '1000002', 'T2')]).then((r) => {
    arrived = true;
    return r;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.notOk(arrived, 'the ingest waits for the run');
  await insertTrackingEmail(run, { id: draft!.id, patient_icn: icn(1) });
  await run`update medication_dispense set state = 'grouped' where tracking_email_id = ${draft!.id}`;
  await run`commit`;
  t.equal((await ingest).stored.size, 1, 'the new dispense is stored');

  const rows = await sql<{ rx_number: string; state: string; tracking_email_id: string }[]>`
    select rx_number, state, tracking_email_id from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['1000001', 'grouped'],
      ['1000002', 'pending'],
    ],
  );
  t.equal(rows[0]!.tracking_email_id, draft!.id);
  const [next] = await sql<{ id: string }[]>`select id from tracking_email_draft where patient_icn = ${icn(1)}`;
  t.ok(next && next.id !== draft!.id, 'the veteran has a new draft');
  t.equal(rows[1]!.tracking_email_id, next!.id, 'the new dispense names it, not the email being sent');
});

t.test("a replayed body neither holds back its veterans' emails nor leaves a dispense without its draft", async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1', arrived_minutes_ago: 120 }]);
  const [before] = await sql`select id, last_arrival_at from tracking_email_draft`;
  const inbound = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  // The stored event again, beside a new one for a veteran with nothing pending.
  const replay = await ingestDispenses(sql, inbound, [
    { ...cmopDispense(icn(1), '1000001', 'T1'), stationNumber: '521' },
    cmopDispense(icn(2), '2000001', 'T2'),
  ]);
  t.equal(replay.stored.size, 1, 'only the new event is stored');
  const [after] = await sql`select id, last_arrival_at from tracking_email_draft where patient_icn = ${icn(1)}`;
  t.same(after, before, "the replayed veteran's draft keeps its newest arrival");
  t.same(
    await group(sql),
    { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 0, dispensesHeld: 0, skipped: false },
    'the replayed veteran is ready',
  );
  const [second] =
    await sql`select d.tracking_email_id = r.id as named from medication_dispense d join tracking_email_draft r on r.patient_icn = d.patient_icn where d.rx_number = '2000001'`;
  t.ok(second?.named, "the new veteran's dispense names their new draft");
});

/** Waits until `count` backends of the test's database wait for a lock. */
async function lockWaiters(sql: Parameters<typeof runGrouping>[0]['sql'], count: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const [row] = await sql<{ waiting: number }[]>`
      select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
    if (row!.waiting >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`never saw ${count} backends waiting for a lock`);
}

t.test("a replay naming a veteran's pending events without their ICN waits for grouping, and neither fails", async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'TX' },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'TY' },
  ]);
  // Holds the first dispense so that the run, once it took the draft, waits for it: the moment a
  // replay that locks the same dispenses in the other order would make a lock cycle.
  const blocker = await sql.reserve();
  t.teardown(() => blocker.release());
  await blocker`begin`;
  await blocker`select id from medication_dispense where rx_number = '1000001' for update`;
  const outcome = (p: Promise<unknown>) =>
    p.then(
      () => 'ok',
      (error: { code?: string; message: string }) => `${error.code}: ${error.message}`,
    );
  const grouping = outcome(group(sql));
  await lockWaiters(sql, 1);
  const inbound = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  // Both events again, second first, without an ICN: unprocessable copies of stored pending events.
  const replay = outcome(
    ingestDispenses(sql, inbound, [
      { ...cmopDispense(icn(1), '1000002', 'TY'), veteranIcn: null, state: 'unprocessable', stateReason: 'no ICN' },
      { ...cmopDispense(icn(1), '1000001', 'TX'), veteranIcn: null, state: 'unprocessable', stateReason: 'no ICN' },
    ]),
  );
  await lockWaiters(sql, 2);
  await blocker`commit`;
  t.same({ grouping: await grouping, replay: await replay }, { grouping: 'ok', replay: 'ok' });
  const rows = await sql`select state from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => r.state),
    ['grouped', 'grouped'],
    'the run grouped both; the replay changed nothing',
  );
});

t.test(
  "a dispense shipped before DELIVERY_START_AT that the run's exclusion did not see is set aside when its draft is grouped",
  async (t) => {
    const { sql } = await testDatabase(t);
    await insertDispenses(sql, [
      { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1', shipped_at: new Date('2026-06-01T11:59:59Z') },
      { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'T2', shipped_at: new Date('2026-06-01T12:00:00Z') },
    ]);
    // As if it committed between the run's exclusion and its taking of the drafts.
    const result = await groupReadyDrafts(sql);
    t.same(result, { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 0 });
    const rows =
      await sql`select rx_number, state, state_reason, tracking_email_id is null as unnamed from medication_dispense order by rx_number`;
    t.same(
      rows.map((r) => [r.rx_number, r.state, r.unnamed]),
      [
        ['1000001', 'excluded', true],
        ['1000002', 'grouped', false],
      ],
    );
    t.match(rows[0]!.state_reason, /DELIVERY_START_AT/);
    const [email] = await sql`select prescription_count, personalisation from tracking_email`;
    t.equal(email!.prescription_count, 1);
    t.notMatch(email!.personalisation.tracking_info, /T1/);
  },
);
