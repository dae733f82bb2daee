// Deciding the held packages: what a release refuses, a package decided before its late fill, and
// the CLI.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { internalAuth, internalToken, testApp, runJob } from '../support/app.ts';
import { runScript, tempDir } from '../support/cli.ts';
import { icn } from '../support/fixtures.ts';
import { event, hours, ingest, mhvExport, packages, release, settings } from '../support/cutover.ts';

t.test('a release refuses what it cannot decide on, and changes nothing', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await runJob(app, 'grouping');
  const held = async () => (await db.sql`select count(*)::int as n from medication_dispense where state = 'held_for_cutover'`)[0]!.n;

  const badRow = `icn,tracking_number,carrier,sent_date\r\n${icn(3)},1Z0000000000000003,UPS,2026-06-02T13:00:00Z\r\n${icn(9)},1Z0000000000000009,UPS,not a date\r\n`;
  const refused = await release(app, badRow);
  t.equal(refused.statusCode, 400);
  t.match(refused.json().message, /1 row\(s\) that cannot be read, so nothing was decided: line 3: /);
  t.notMatch(refused.body, new RegExp(icn(9)), 'no ICN in the answer');
  t.equal(
    (await release(app, 'icn,tracking_number,carrier,sent_date\r\n')).json().message,
    'the export has no rows, so nothing was decided: an export of the hold window always lists the packages MHV emailed before the cut-over',
  );
  t.match((await release(app, mhvExport(packages), null)).json().message, /^mhvJobRunAt: required/);
  t.match((await release(app, mhvExport(packages), '2026-02-30T00:00:00Z')).json().message, /^mhvJobRunAt: expected a real ISO 8601/);
  t.match(
    (await release(app, mhvExport(packages), new Date(Date.now() + 3_600_000).toISOString())).json().message,
    /^mhvJobRunAt: is in the future/,
  );
  t.equal(await held(), 2, 'nothing was decided');

  // A package with a fill that arrived after MHV's job ran waits for a later export.
  const ranAt = new Date(Date.now() - 60_000).toISOString();
  const waiting = await release(app, mhvExport(packages), ranAt);
  t.match(waiting.json(), {
    released: { packages: 0 },
    emailedByMhv: { packages: 0 },
    stillHeld: { packages: 2, trackingNumbers: ['1Z0000000000000002', '1Z0000000000000003'] },
  });
  t.equal(await held(), 2);
  t.match((await release(app, mhvExport(packages))).json(), {
    released: { packages: 1 },
    emailedByMhv: { packages: 1 },
    stillHeld: { packages: 0 },
  });
  t.equal(await held(), 0);
});

t.test('a fill held after its package was decided follows the decision at the next grouping run', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await runJob(app, 'grouping');
  t.match((await release(app, mhvExport(packages))).json(), { released: { packages: 1 }, emailedByMhv: { packages: 1 } });
  // As if a run that had not yet seen the decision held a fill of each package.
  for (const [rx, tracking, p] of [
    ['2000077', '1Z0000000000000002', packages[1]!],
    ['3000077', '1Z0000000000000003', packages[2]!],
  ] as const) {
    await db.sql`insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, shipped_at, state, state_reason)
                 values ('521', ${rx}, 0, ${tracking}, ${icn(p.veteran)}, ${hours(1)}, 'held_for_cutover', 'held')`;
    await db.sql`insert into cutover_dispense (dispense_id, tracking_number, set_aside) select id, ${tracking}, 'held' from medication_dispense where rx_number = ${rx}`;
  }
  await runJob(app, 'grouping');
  const rows = await db.sql`select rx_number, state from medication_dispense where rx_number in ('2000077', '3000077') order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['2000077', 'grouped'],
      ['3000077', 'excluded'],
    ],
  );
  t.match((await app.inject({ method: 'GET', url: '/v1/cutover', headers: internalAuth })).json(), {
    held: { packages: 0, dispenses: 0 },
    released: { packages: 1, dispenses: 2 },
    emailedByMhv: { packages: 1, dispenses: 2 },
  });
});

const runCli = (args: string[], env: Record<string, string>) =>
  runScript('src/cutover/cli.ts', args, { NODE_ENV: 'test', INTERNAL_API_TOKENS: internalToken, ...env });

t.test('npm run cutover-release decides the held packages from an export file', async (t) => {
  const { app, db } = await testApp(t, settings);
  await ingest(app, [event(packages[1]!, packages[1]!.fills[0]!), event(packages[2]!, packages[2]!.fills[0]!)]);
  await runJob(app, 'grouping');
  const dir = tempDir(t, 'cutover-release-');
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
