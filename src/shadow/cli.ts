// npm run shadow-compare -- <mhv-export.csv> [--out mismatches.csv] [--from ISO] [--to ISO]
//
// Compares MHV's export of the Rx tracking emails it sent with what this service would have sent
// (DELIVERY_MODE=shadow) over the same period, prints a summary, and writes every mismatch to --out
// (`--out -` writes the CSV to stdout and the summary to stderr). Reads the database named by
// DATABASE_URL (or DATABASE_URL_FILE) and changes nothing in it.
//
// Exit codes: 0 the comparison ran (mismatches or not); 2 bad arguments or an unreadable export;
// 1 anything else (the database, for one).
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.ts';
import { connect } from '../db/connect.ts';
import { exportCommandFailure, ExportFormatError } from './export.ts';
import { mismatchCsv, summaryText } from './report.ts';
import { parseWindowBound, runShadowComparison, WindowError } from './run.ts';

const usage = 'usage: npm run shadow-compare -- <mhv-export.csv> [--out mismatches.csv|-] [--from ISO] [--to ISO]';

function fail(code: number, message: string): never {
  process.stderr.write(`shadow-compare: ${message}\n`);
  process.exit(code);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: { out: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
} catch (error) {
  fail(2, `${(error as Error).message}\n${usage}`);
}
if (args.values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
if (args.positionals.length !== 1) fail(2, `give exactly one export file\n${usage}`);
const [exportPath] = args.positionals as [string];

let from: Date | undefined;
let to: Date | undefined;
try {
  from = args.values.from === undefined ? undefined : parseWindowBound(args.values.from, 'from');
  to = args.values.to === undefined ? undefined : parseWindowBound(args.values.to, 'to');
} catch (error) {
  fail(2, (error as Error).message.replace(/^(from|to):/, '--$1:'));
}

let databaseUrl: string | undefined;
try {
  // The whole config is validated so that DATABASE_URL_FILE works as in the service.
  databaseUrl = loadConfig().DATABASE_URL;
} catch (error) {
  if (error instanceof ConfigError) fail(2, error.message);
  throw error;
}
// An embedded database would be empty: comparing against it would report every package as missing.
if (databaseUrl === undefined) fail(2, 'DATABASE_URL (or DATABASE_URL_FILE) must name the service database');

const sql = connect(databaseUrl, { max: 2, applicationName: 'rx-tracking-email shadow-compare' });
let exitCode = 0;
try {
  const input = createReadStream(exportPath);
  const report = await runShadowComparison(sql, input, { from, to });
  const out = args.values.out;
  const summary = summaryText(report);
  if (out === '-') {
    process.stderr.write(summary);
    process.stdout.write(mismatchCsv(report));
  } else {
    process.stdout.write(summary);
    if (out !== undefined) {
      await writeFile(out, mismatchCsv(report), { mode: 0o600 });
      process.stdout.write(`\n${report.mismatches.length} mismatches written to ${out}\n`);
    } else if (report.mismatches.length > 0) {
      process.stdout.write(`\nWrite every mismatch as CSV with --out FILE.\n`);
    }
  }
} catch (error) {
  const failure = exportCommandFailure('shadow-compare', exportPath, error, (e) => e instanceof ExportFormatError || e instanceof WindowError);
  process.stderr.write(failure.message);
  exitCode = failure.exitCode;
} finally {
  await sql.end({ timeout: 5 });
}
process.exit(exitCode);
