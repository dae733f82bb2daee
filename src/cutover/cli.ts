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
import { commandArguments, fail, runAndExit } from '../shadow/export-command.ts';
import { cutoverStatus } from './repository.ts';
import { parseMhvJobRunAt, releaseFromExport, ReleaseInputError } from './release.ts';

const command = { name: 'cutover-release', usage: 'usage: npm run cutover-release -- [<mhv-export.csv> --mhv-job-run-at ISO]' };

const args = commandArguments(command, { 'mhv-job-run-at': { type: 'string' } });
if (args.positionals.length > 1) fail(command, 2, `give at most one export file\n${command.usage}`);
const exportPath = args.positionals[0];
let mhvJobRunAt: Date | undefined;
if (exportPath !== undefined) {
  try {
    mhvJobRunAt = parseMhvJobRunAt(args.values['mhv-job-run-at']);
  } catch (error) {
    fail(command, 2, (error as Error).message.replace(/^mhvJobRunAt:/, '--mhv-job-run-at:'));
  }
}

await runAndExit(
  command,
  exportPath,
  (e) => e instanceof ReleaseInputError,
  async (sql) => {
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
  },
);
