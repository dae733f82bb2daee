// npm run cutover-release -- <mhv-export.csv> --mhv-job-run-at ISO
//
// Decides the packages held at the cut-over from MHV's export (docs/cutover.md): the ones MHV
// emailed stay MHV's, the others are released to this service, per tracking number. Without
// --mhv-job-run-at it only prints what is held. Reads and writes the database named by DATABASE_URL
// (or DATABASE_URL_FILE).
//
// Exit codes: 0 done; 2 bad arguments, or an export that cannot be decided on (nothing changed);
// 1 anything else (the database, for one).
import { createReadStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.ts';
import { connect } from '../db/connect.ts';
import { exportCommandFailure } from '../shadow/export.ts';
import { cutoverStatus } from './repository.ts';
import { parseMhvJobRunAt, releaseFromExport, ReleaseInputError } from './release.ts';

const usage = 'usage: npm run cutover-release -- [<mhv-export.csv> --mhv-job-run-at ISO]';

function fail(code: number, message: string): never {
  process.stderr.write(`cutover-release: ${message}\n`);
  process.exit(code);
}

let args;
try {
  args = parseArgs({ allowPositionals: true, options: { 'mhv-job-run-at': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
} catch (error) {
  fail(2, `${(error as Error).message}\n${usage}`);
}
if (args.values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
if (args.positionals.length > 1) fail(2, `give at most one export file\n${usage}`);
const exportPath = args.positionals[0];
let mhvJobRunAt: Date | undefined;
if (exportPath !== undefined) {
  try {
    mhvJobRunAt = parseMhvJobRunAt(args.values['mhv-job-run-at']);
  } catch (error) {
    fail(2, (error as Error).message.replace(/^mhvJobRunAt:/, '--mhv-job-run-at:'));
  }
}

let databaseUrl: string | undefined;
try {
  databaseUrl = loadConfig().DATABASE_URL;
} catch (error) {
  if (error instanceof ConfigError) fail(2, error.message);
  throw error;
}
if (databaseUrl === undefined) fail(2, 'DATABASE_URL (or DATABASE_URL_FILE) must name the service database');

const sql = connect(databaseUrl, { max: 2, applicationName: 'rx-tracking-email cutover-release' });
let exitCode = 0;
try {
  if (exportPath !== undefined && mhvJobRunAt !== undefined) {
    const result = await releaseFromExport(sql, createReadStream(exportPath), mhvJobRunAt);
    process.stdout.write(
      `export rows: ${result.exportRows}\n` +
        `released to this service: ${result.released.packages} packages (${result.released.dispenses} dispenses)\n` +
        `left to MHV (emailed by MHV): ${result.emailedByMhv.packages} packages (${result.emailedByMhv.dispenses} dispenses)\n` +
        `still held (a fill arrived at or after --mhv-job-run-at): ${result.stillHeld.packages} packages (${result.stillHeld.dispenses} dispenses)\n`,
    );
    for (const n of result.stillHeld.trackingNumbers) process.stdout.write(`still held: ${n}\n`);
  }
  const status = await cutoverStatus(sql, 50);
  process.stdout.write(
    `held now: ${status.held.packages} packages (${status.held.dispenses} dispenses), oldest held at ${status.held.oldestHeldAt ?? '-'}\n` +
      `decided so far: ${status.released.packages} packages released, ${status.emailedByMhv.packages} left to MHV\n`,
  );
} catch (error) {
  const failure = exportCommandFailure('cutover-release', exportPath, error, (e) => e instanceof ReleaseInputError);
  process.stderr.write(failure.message);
  exitCode = failure.exitCode;
} finally {
  await sql.end({ timeout: 5 });
}
process.exit(exitCode);
