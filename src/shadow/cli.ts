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
import { ExportFormatError } from './export.ts';
import { commandArguments, fail, runAndExit } from './export-command.ts';
import { mismatchCsv, summaryText } from './report.ts';
import { parseWindowBound, runShadowComparison, WindowError } from './run.ts';

const command = {
  name: 'shadow-compare',
  usage: 'usage: npm run shadow-compare -- <mhv-export.csv> [--out mismatches.csv|-] [--from ISO] [--to ISO]',
};

const args = commandArguments(command, { out: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' } });
if (args.positionals.length !== 1) fail(command, 2, `give exactly one export file\n${command.usage}`);
const [exportPath] = args.positionals as [string];
const { values } = args;

let from: Date | undefined;
let to: Date | undefined;
try {
  from = values.from === undefined ? undefined : parseWindowBound(values.from, 'from');
  to = values.to === undefined ? undefined : parseWindowBound(values.to, 'to');
} catch (error) {
  fail(command, 2, (error as Error).message.replace(/^(from|to):/, '--$1:'));
}

await runAndExit(
  command,
  exportPath,
  (e) => e instanceof ExportFormatError || e instanceof WindowError,
  async (sql) => {
    const report = await runShadowComparison(sql, createReadStream(exportPath), { from, to });
    const out = values.out;
    const summary = summaryText(report);
    if (out === '-') {
      process.stderr.write(summary);
      process.stdout.write(mismatchCsv(report));
      return;
    }
    process.stdout.write(summary);
    if (out !== undefined) {
      await writeFile(out, mismatchCsv(report), { mode: 0o600 });
      process.stdout.write(`\n${report.mismatches.length} mismatches written to ${out}\n`);
    } else if (report.mismatches.length > 0) {
      process.stdout.write(`\nWrite every mismatch as CSV with --out FILE.\n`);
    }
  },
);
