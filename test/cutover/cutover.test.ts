// The hand-over from MHV's emails to this service, driven as the on-call engineer runs it: packages
// on both sides of the cut-over instant T, whose shipped-at here (the CMOP message time) and MHV's
// own shipped date disagree by hours, go through ingest, grouping, the hold, MHV's export and the
// release, and the sandbox VA Notify: every package is emailed exactly once, by one of the two.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { internalAuth, testApp, type TestApp } from '../helpers/app.ts';
import { icn } from '../helpers/fixtures.ts';

const T = Date.parse('2026-06-02T14:00:00Z');
const hours = (h: number) => new Date(T + h * 3_600_000);
const settings = { DELIVERY_START_AT: '2026-06-02T14:00:00Z', CUTOVER_HOLD_HOURS: '6', GROUPING_QUIET_MINUTES: '0' };

interface Fill {
  rx: string;
  /** This service's shipped-at (the CMOP message time), in hours from T. */
  ours: number;
}

interface Package {
  trackingNumber: string;
  veteran: number;
  fills: Fill[];
  /** MHV's own shipped date for the package, in hours from T: MHV emails it when before T. */
  mhv: number;
}

// Skews of one to four hours either way between the two systems' times for one package.
const packages: Package[] = [
  { trackingNumber: '1Z0000000000000001', veteran: 1, fills: [{ rx: '1000001', ours: -10 }], mhv: -8 },
  { trackingNumber: '1Z0000000000000002', veteran: 2, fills: [{ rx: '2000001', ours: -3 }], mhv: 1 }, // MHV: after T; here: before
  { trackingNumber: '1Z0000000000000003', veteran: 3, fills: [{ rx: '3000001', ours: 2 }], mhv: -2 }, // MHV: before T; here: after
  { trackingNumber: '1Z0000000000000004', veteran: 1, fills: [{ rx: '1000004', ours: 1 }], mhv: 2 },
  { trackingNumber: '1Z0000000000000005', veteran: 2, fills: [{ rx: '2000005', ours: -1 }], mhv: -2 },
  { trackingNumber: '1Z0000000000000006', veteran: 3, fills: [{ rx: '3000006', ours: 10 }], mhv: 7 },
  // A package whose fills' message times straddle the start of the hold window, MHV: after T.
  { trackingNumber: '1Z0000000000000007', veteran: 4, fills: [{ rx: '4000001', ours: -6.2 }, { rx: '4000002', ours: -5.8 }], mhv: 0.5 },
  // A package whose fills straddle the end of the hold window, MHV: before T.
  { trackingNumber: '1Z0000000000000008', veteran: 5, fills: [{ rx: '5000001', ours: 5.8 }, { rx: '5000002', ours: 6.3 }], mhv: -0.2 },
];

const event = (p: Package, fill: Fill, shippedAt = hours(fill.ours)) => ({
  messageId: `cutover-${fill.rx}`,
  stationNumber: '521',
  patient: { icn: icn(p.veteran), mhvCorrelationId: String(10_000_000 + p.veteran) },
  prescription: { rxNumber: fill.rx, fillNumber: 0, drugName: 'SIMVASTATIN 40MG TAB', ndc: '00093718098', quantity: 90 },
  dispensedAt: new Date(shippedAt.getTime() - 3_600_000).toISOString(),
  shippedAt: shippedAt.toISOString(),
  carrier: 'UPS',
  trackingNumber: p.trackingNumber,
});

/** MHV's export as the runbook's query writes it: one row per package MHV emailed. */
function mhvExport(list: Package[]): string {
  const rows = list.filter((p) => p.mhv < 0).map((p) => `${icn(p.veteran)},${p.trackingNumber},UPS,${hours(p.mhv + 1).toISOString().replace('.000Z', 'Z')}`);
  return ['icn,tracking_number,carrier,sent_date', ...rows].join('\r\n') + '\r\n';
}

async function ingest(app: TestApp['app'], events: unknown[]) {
  const answer = await app.inject({ method: 'POST', url: '/v1/dispenses', headers: { ...internalAuth, 'content-type': 'application/json' }, payload: events });
  if (answer.statusCode !== 200) throw new Error(`ingest answered ${answer.statusCode}: ${answer.body}`);
}

const job = (app: TestApp['app'], name: string) =>
  app.inject({ method: 'POST', url: `/v1/jobs/${name}`, headers: internalAuth }).then((r) => r.json());

const release = (app: TestApp['app'], csv: string, mhvJobRunAt: string | null = new Date().toISOString()) =>
  app.inject({
    method: 'POST',
    url: `/v1/cutover/release${mhvJobRunAt === null ? '' : `?mhvJobRunAt=${encodeURIComponent(mhvJobRunAt)}`}`,
    headers: { ...internalAuth, 'content-type': 'text/csv' },
    payload: csv,
  });

/** Each tracking number VA Notify was asked to email, with how many emails named it. */
function emailedByService(vaNotify: TestApp['vaNotify']): Map<string, number> {
  const counts = new Map<string, number>();
  for (const n of vaNotify.state.notifications.values()) {
    const info = String((n.request.personalisation as Record<string, string>).tracking_info);
    for (const p of packages) if (info.includes(p.trackingNumber)) counts.set(p.trackingNumber, (counts.get(p.trackingNumber) ?? 0) + 1);
  }
  return counts;
}

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.split(' ')[1]);
}

t.test('packages on both sides of T, the two systems skewed by hours: each is emailed once, by one system', async (t) => {
  const { app, db, vaNotify } = await testApp(t, settings);
  await ingest(app, packages.flatMap((p) => p.fills.map((f) => event(p, f))));

  t.match(await job(app, 'grouping'), { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 8 });
  t.match(await job(app, 'send'), { sent: 1 });
  t.same([...emailedByService(vaNotify).keys()], ['1Z0000000000000006'], 'before the release only the package clear of the window is emailed');

  const status = await app.inject({ method: 'GET', url: '/v1/cutover', headers: internalAuth });
  t.equal(status.statusCode, 200);
  t.match(status.json(), {
    deliveryStartAt: '2026-06-02T14:00:00.000Z',
    holdHours: 6,
    holdWindow: { from: '2026-06-02T08:00:00.000Z', to: '2026-06-02T20:00:00.000Z' },
    held: { packages: 6, dispenses: 8 },
    released: { packages: 0 },
  });
  t.same(status.json().heldPackages.map((p: { trackingNumber: string }) => p.trackingNumber).sort(),
    ['1Z0000000000000002', '1Z0000000000000003', '1Z0000000000000004', '1Z0000000000000005', '1Z0000000000000007', '1Z0000000000000008']);
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

  t.match(await job(app, 'grouping'), { emailsCreated: 3, dispensesGrouped: 4, dispensesHeld: 0 });
  t.match(await job(app, 'send'), { sent: 3 });

  const byService = emailedByService(vaNotify);
  const byMhv = new Set(packages.filter((p) => p.mhv < 0).map((p) => p.trackingNumber));
  for (const p of packages) {
    const times = (byService.get(p.trackingNumber) ?? 0) + (byMhv.has(p.trackingNumber) ? 1 : 0);
    t.equal(times, 1, `${p.trackingNumber} (here ${p.fills.map((f) => f.ours).join('/')} h, MHV ${p.mhv} h from T) is emailed once`);
  }
  const [split] = await db.sql`select count(distinct tracking_email_id)::int as emails, count(*)::int as fills from medication_dispense where tracking_number = '1Z0000000000000007'`;
  t.same(split, { emails: 1, fills: 2 }, 'the package whose fills straddled the window went out whole, in one email');
  const mhvPackage = await db.sql`select state, state_reason from medication_dispense where tracking_number = '1Z0000000000000008'`;
  t.same(mhvPackage.map((r) => r.state), ['excluded', 'excluded'], 'the package MHV emailed is MHV\'s whole');
  t.match(mhvPackage[0]!.state_reason, /MHV's export lists this package/);

  // Late fills follow their package's decision, whatever their own times say.
  await ingest(app, [
    event(packages[2]!, { rx: '3000099', ours: 9 }),
    event(packages[1]!, { rx: '2000099', ours: -9 }),
  ]);
  t.match(await job(app, 'grouping'), { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 0 });
  const late = await db.sql`select rx_number, state from medication_dispense where rx_number in ('2000099', '3000099') order by rx_number`;
  t.same(late.map((r) => [r.rx_number, r.state]), [['2000099', 'grouped'], ['3000099', 'excluded']]);
  const after = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(metric(after, 'rx_cutover_held_packages'), 0);
  t.equal(metric(after, 'rx_cutover_oldest_held_age_seconds'), 0);
});

t.test('held packages are never sent nor dropped while MHV\'s export is not compared, and stay visible', async (t) => {
  const { app, db, vaNotify } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  for (let run = 0; run < 3; run++) await job(app, 'grouping');
  await job(app, 'send');
  t.equal(vaNotify.state.notifications.size, 0, 'nothing held was sent');
  const states = await db.sql`select state from medication_dispense`;
  t.same(states.map((r) => r.state), ['held_for_cutover', 'held_for_cutover']);
  await db.sql`update cutover_dispense set set_aside_at = now() - interval '2 days'`;
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(metric(metrics, 'rx_cutover_held_dispenses'), 2);
  t.ok(metric(metrics, 'rx_cutover_oldest_held_age_seconds') >= 2 * 86_400, 'the wait shows, for an alarm');
  const stats = await app.inject({ method: 'GET', url: '/v1/stats', headers: internalAuth });
  t.equal(stats.json().dispenses.held_for_cutover, 2);
});

t.test('a release refuses what it cannot decide on, and changes nothing', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await job(app, 'grouping');
  const held = async () => (await db.sql`select count(*)::int as n from medication_dispense where state = 'held_for_cutover'`)[0]!.n;

  const badRow = `icn,tracking_number,carrier,sent_date\r\n${icn(3)},1Z0000000000000003,UPS,2026-06-02T13:00:00Z\r\n${icn(9)},1Z0000000000000009,UPS,not a date\r\n`;
  const refused = await release(app, badRow);
  t.equal(refused.statusCode, 400);
  t.match(refused.json().message, /1 row\(s\) that cannot be read, so nothing was decided: line 3: /);
  t.notMatch(refused.body, new RegExp(icn(9)), 'no ICN in the answer');
  t.equal((await release(app, 'icn,tracking_number,carrier,sent_date\r\n')).json().message, 'the export has no rows, so nothing was decided: an export of the hold window always lists the packages MHV emailed before the cut-over');
  t.match((await release(app, mhvExport(packages), null)).json().message, /^mhvJobRunAt: required/);
  t.match((await release(app, mhvExport(packages), '2026-02-30T00:00:00Z')).json().message, /^mhvJobRunAt: expected a real ISO 8601/);
  t.match((await release(app, mhvExport(packages), new Date(Date.now() + 3_600_000).toISOString())).json().message, /^mhvJobRunAt: is in the future/);
  t.equal(await held(), 2, 'nothing was decided');

  // A package with a fill that arrived after MHV's job ran waits for a later export.
  const ranAt = new Date(Date.now() - 60_000).toISOString();
  const waiting = await release(app, mhvExport(packages), ranAt);
  t.match(waiting.json(), { released: { packages: 0 }, emailedByMhv: { packages: 0 }, stillHeld: { packages: 2, trackingNumbers: ['1Z0000000000000002', '1Z0000000000000003'] } });
  t.equal(await held(), 2);
  t.match((await release(app, mhvExport(packages))).json(), { released: { packages: 1 }, emailedByMhv: { packages: 1 }, stillHeld: { packages: 0 } });
  t.equal(await held(), 0);
});

t.test('an HL7 R06 package whose message time is a day after its fill: held by its dispensed time, emailed once', async (t) => {
  const { app, vaNotify } = await testApp(t, settings);
  // CMOP's HL7 has no ship time: shipped-at is MSH-7, here 18 and 25 hours after T, while the fills
  // were completed (RXD-3) 2 hours before and 1 hour after T, close to MHV's own shipped date.
  const message = (control: string, msh7: string, rx: string, rxd3: string, tracking: string, veteran: number) => [
    `MSH|^~\\&|VistA||MHV||${msh7}||RDS^R06|${control}|P|2.3.1||||AL|AL`,
    `PID|||${icn(veteran)}^^^USVHA^NI~${20_000_000 + veteran}^^^200MHS^PI||^CMOPTEST^HOTEL`,
    `ORC|OK|0124-${rx}-0`,
    `RXD|0|S0022^SIMVASTATIN 40MG TAB^L|${rxd3}|90|||${rx}`,
    `ZR2|UPS|${tracking}|${rx}`,
  ].join('\r');
  const body = [
    message('CUT-HL7-1', '20260603080000', '9000001', '20260602120000', '1Z0000000000000010', 20),
    message('CUT-HL7-2', '20260603150000', '9000002', '20260602150000', '1Z0000000000000011', 21),
  ].join('\r') + '\r';
  const answer = await app.inject({ method: 'POST', url: '/v1/dispenses', headers: { ...internalAuth, 'content-type': 'application/hl7-v2' }, payload: body });
  t.equal(answer.statusCode, 200);
  t.match(await job(app, 'grouping'), { emailsCreated: 0, dispensesHeld: 2 });

  // MHV's shipped date follows the fill: it emailed the first package (before T), not the second.
  const csv = `icn,tracking_number,carrier,sent_date\r\n${icn(20)},1Z0000000000000010,UPS,2026-06-02T13:00:00Z\r\n`;
  t.match((await release(app, csv)).json(), { released: { trackingNumbers: ['1Z0000000000000011'] }, emailedByMhv: { trackingNumbers: ['1Z0000000000000010'] } });
  await job(app, 'grouping');
  await job(app, 'send');
  const infos = [...vaNotify.state.notifications.values()].map((n) => String((n.request.personalisation as Record<string, string>).tracking_info));
  t.equal(infos.length, 1);
  t.match(infos[0], /1Z0000000000000011/);
  t.notMatch(infos.join('\n'), /1Z0000000000000010/, 'the package MHV emailed is not emailed again');
});

t.test('a fill held after its package was decided follows the decision at the next grouping run', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await job(app, 'grouping');
  t.match((await release(app, mhvExport(packages))).json(), { released: { packages: 1 }, emailedByMhv: { packages: 1 } });
  // As if a run that had not yet seen the decision held a fill of each package.
  for (const [rx, tracking, p] of [['2000077', '1Z0000000000000002', packages[1]!], ['3000077', '1Z0000000000000003', packages[2]!]] as const) {
    await db.sql`insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, shipped_at, state, state_reason)
                 values ('521', ${rx}, 0, ${tracking}, ${icn(p.veteran)}, ${hours(1)}, 'held_for_cutover', 'held')`;
    await db.sql`insert into cutover_dispense (dispense_id, tracking_number, set_aside) select id, ${tracking}, 'held' from medication_dispense where rx_number = ${rx}`;
  }
  await job(app, 'grouping');
  const rows = await db.sql`select rx_number, state from medication_dispense where rx_number in ('2000077', '3000077') order by rx_number`;
  t.same(rows.map((r) => [r.rx_number, r.state]), [['2000077', 'grouped'], ['3000077', 'excluded']]);
  t.match((await app.inject({ method: 'GET', url: '/v1/cutover', headers: internalAuth })).json(), { held: { packages: 0, dispenses: 0 }, released: { packages: 1, dispenses: 2 }, emailedByMhv: { packages: 1, dispenses: 2 } });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--no-warnings', 'src/cutover/cli.ts', ...args], {
      cwd: fileURLToPath(new URL('../../', import.meta.url)),
      env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', INTERNAL_API_TOKENS: 'test-internal-token-0001', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('npm run cutover-release decides the held packages from an export file', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await job(app, 'grouping');
  const dir = mkdtempSync(join(tmpdir(), 'cutover-release-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mhv-export.csv');
  writeFileSync(file, mhvExport(packages));
  const env = { DATABASE_URL: db.url };

  const status = await runCli([], env);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, 'held now: 2 packages (2 dispenses)');
  const missing = await runCli([file], env);
  t.equal(missing.code, 2);
  t.match(missing.stderr, '--mhv-job-run-at: required');
  const bad = join(dir, 'bad.csv');
  writeFileSync(bad, 'icn,tracking_number,carrier,sent_date\n1012345678V123456,1Z9,UPS,someday\n');
  const refused = await runCli([bad, '--mhv-job-run-at', new Date().toISOString()], env);
  t.equal(refused.code, 2);
  t.match(refused.stderr, 'nothing was decided: line 2:');
  t.equal((await db.sql`select count(*)::int as n from medication_dispense where state = 'held_for_cutover'`)[0]!.n, 2, 'nothing changed');

  const done = await runCli([file, '--mhv-job-run-at', new Date().toISOString()], env);
  t.equal(done.code, 0, done.stderr);
  t.match(done.stdout, 'released to this service: 1 packages (1 dispenses)');
  t.match(done.stdout, 'left to MHV (emailed by MHV): 1 packages (1 dispenses)');
  t.match(done.stdout, 'held now: 0 packages');
});
