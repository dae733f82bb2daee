// The hand-over from MHV's emails to this service, driven as the on-call engineer runs it: packages
// on both sides of the cut-over instant T, whose shipped-at here (the CMOP message time) and MHV's
// own shipped date disagree by hours, go through ingest, grouping, the hold, MHV's export and the
// release, and the sandbox VA Notify: every package is emailed exactly once, by one of the two.
import t from 'tap';
import { internalAuth, testApp, runJob } from '../support/app.ts';
import { icn } from '../support/fixtures.ts';
import { postDispenses } from '../support/ingest.ts';
import { emailedByService, event, ingest, metric, mhvExport, packages, release, settings } from '../support/cutover.ts';

t.test('packages on both sides of T, the two systems skewed by hours: each is emailed once, by one system', async (t) => {
  const { app, db, vaNotify } = await testApp(t, settings);
  await ingest(
    app,
    packages.flatMap((p) => p.fills.map((f) => event(p, f))),
  );

  t.match(await runJob(app, 'grouping'), { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 8 });
  t.match(await runJob(app, 'send'), { sent: 1 });
  t.same(
    [...emailedByService(vaNotify).keys()],
    ['1Z0000000000000006'],
    'before the release only the package clear of the window is emailed',
  );

  const status = await app.inject({ method: 'GET', url: '/v1/cutover', headers: internalAuth });
  t.equal(status.statusCode, 200);
  t.match(status.json(), {
    deliveryStartAt: '2026-06-02T14:00:00.000Z',
    holdHours: 6,
    holdWindow: { from: '2026-06-02T08:00:00.000Z', to: '2026-06-02T20:00:00.000Z' },
    held: { packages: 6, dispenses: 8 },
    released: { packages: 0 },
  });
  t.same(
    status
      .json()
      .heldPackages.map((p: { trackingNumber: string }) => p.trackingNumber)
      .sort(),
    ['1Z0000000000000002', '1Z0000000000000003', '1Z0000000000000004', '1Z0000000000000005', '1Z0000000000000007', '1Z0000000000000008'],
  );
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(metric(metrics, 'rx_cutover_held_packages'), 6);
  t.equal(metric(metrics, 'rx_cutover_held_dispenses'), 8);
  t.ok(metric(metrics, 'rx_cutover_oldest_held_age_seconds') >= 0);

  const answer = await release(app, mhvExport(packages));
  t.equal(answer.statusCode, 200, answer.body);
  t.same(answer.json(), {
    exportRows: 4,
    released: { packages: 3, dispenses: 4, trackingNumbers: ['1Z0000000000000002', '1Z0000000000000004', '1Z0000000000000007'] },
    emailedByMhv: { packages: 3, dispenses: 4, trackingNumbers: ['1Z0000000000000003', '1Z0000000000000005', '1Z0000000000000008'] },
    stillHeld: { packages: 0, dispenses: 0, trackingNumbers: [] },
  });

  t.match(await runJob(app, 'grouping'), { emailsCreated: 3, dispensesGrouped: 4, dispensesHeld: 0 });
  t.match(await runJob(app, 'send'), { sent: 3 });

  const byService = emailedByService(vaNotify);
  const byMhv = new Set(packages.filter((p) => p.mhv < 0).map((p) => p.trackingNumber));
  for (const p of packages) {
    const times = (byService.get(p.trackingNumber) ?? 0) + (byMhv.has(p.trackingNumber) ? 1 : 0);
    t.equal(times, 1, `${p.trackingNumber} (here ${p.fills.map((f) => f.ours).join('/')} h, MHV ${p.mhv} h from T) is emailed once`);
  }
  const [split] =
    await db.sql`select count(distinct tracking_email_id)::int as emails, count(*)::int as fills from medication_dispense where tracking_number = '1Z0000000000000007'`;
  t.same(split, { emails: 1, fills: 2 }, 'the package whose fills straddled the window went out whole, in one email');
  const mhvPackage = await db.sql`select state, state_reason from medication_dispense where tracking_number = '1Z0000000000000008'`;
  t.same(
    mhvPackage.map((r) => r.state),
    ['excluded', 'excluded'],
    "the package MHV emailed is MHV's whole",
  );
  t.match(mhvPackage[0]!.state_reason, /MHV's export lists this package/);

  // Late fills follow their package's decision, whatever their own times say.
  await ingest(app, [event(packages[2]!, { rx: '3000099', ours: 9 }), event(packages[1]!, { rx: '2000099', ours: -9 })]);
  t.match(await runJob(app, 'grouping'), { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 0 });
  const late = await db.sql`select rx_number, state from medication_dispense where rx_number in ('2000099', '3000099') order by rx_number`;
  t.same(
    late.map((r) => [r.rx_number, r.state]),
    [
      ['2000099', 'grouped'],
      ['3000099', 'excluded'],
    ],
  );
  const after = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(metric(after, 'rx_cutover_held_packages'), 0);
  t.equal(metric(after, 'rx_cutover_oldest_held_age_seconds'), 0);
});

t.test("held packages are never sent nor dropped while MHV's export is not compared, and stay visible", async (t) => {
  const { app, db, vaNotify } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  for (let run = 0; run < 3; run++) await runJob(app, 'grouping');
  await runJob(app, 'send');
  t.equal(vaNotify.state.notifications.size, 0, 'nothing held was sent');
  const states = await db.sql`select state from medication_dispense`;
  t.same(
    states.map((r) => r.state),
    ['held_for_cutover', 'held_for_cutover'],
  );
  await db.sql`update cutover_dispense set set_aside_at = now() - interval '2 days'`;
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(metric(metrics, 'rx_cutover_held_dispenses'), 2);
  t.ok(metric(metrics, 'rx_cutover_oldest_held_age_seconds') >= 2 * 86_400, 'the wait shows, for an alarm');
  const stats = await app.inject({ method: 'GET', url: '/v1/stats', headers: internalAuth });
  t.equal(stats.json().dispenses.held_for_cutover, 2);
});

t.test('an HL7 R06 package whose message time is a day after its fill: held by its dispensed time, emailed once', async (t) => {
  const { app, vaNotify } = await testApp(t, settings);
  // CMOP's HL7 has no ship time: shipped-at is MSH-7, here 18 and 25 hours after T, while the fills
  // were completed (RXD-3) 2 hours before and 1 hour after T, close to MHV's own shipped date.
  const message = (control: string, msh7: string, rx: string, rxd3: string, tracking: string, veteran: number) =>
    [
      `MSH|^~\\&|VistA||MHV||${msh7}||RDS^R06|${control}|P|2.3.1||||AL|AL`,
      `PID|||${icn(veteran)}^^^USVHA^NI~${20_000_000 + veteran}^^^200MHS^PI||^CMOPTEST^HOTEL`,
      `ORC|OK|0124-${rx}-0`,
      `RXD|0|S0022^SIMVASTATIN 40MG TAB^L|${rxd3}|90|||${rx}`,
      `ZR2|UPS|${tracking}|${rx}`,
    ].join('\r');
  const messages = [
    message('CUT-HL7-1', '20260603080000', '9000001', '20260602120000', '1Z0000000000000010', 20),
    message('CUT-HL7-2', '20260603150000', '9000002', '20260602150000', '1Z0000000000000011', 21),
  ];
  const answer = await postDispenses(app, `${messages.join('\r')}\r`, 'application/hl7-v2');
  t.equal(answer.statusCode, 200);
  t.match(await runJob(app, 'grouping'), { emailsCreated: 0, dispensesHeld: 2 });

  // MHV's shipped date follows the fill: it emailed the first package (before T), not the second.
  const csv = `icn,tracking_number,carrier,sent_date\r\n${icn(20)},1Z0000000000000010,UPS,2026-06-02T13:00:00Z\r\n`;
  t.match((await release(app, csv)).json(), {
    released: { trackingNumbers: ['1Z0000000000000011'] },
    emailedByMhv: { trackingNumbers: ['1Z0000000000000010'] },
  });
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  const infos = [...vaNotify.state.notifications.values()].map((n) =>
    String((n.request.personalisation as Record<string, string>).tracking_info),
  );
  t.equal(infos.length, 1);
  t.match(infos[0], /1Z0000000000000011/);
  t.notMatch(infos.join('\n'), /1Z0000000000000010/, 'the package MHV emailed is not emailed again');
});
