// What the two commands that read MHV's export (npm run shadow-compare, npm run cutover-release)
// share: their arguments, the service database they need, and how they end. Each exits 2 for a
// fault of its arguments or of the export, 1 for anything else, and never prints a value from the
// export (it may hold an ICN).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig } from '../config.ts';
import { connect, type Sql } from '../db/connect.ts';

export interface ExportCommand {
  /** The command's name, as each line it writes to stderr starts. */
  name: string;
  usage: string;
}

export function fail(command: ExportCommand, code: number, message: string): never {
  process.stderr.write(`${command.name}: ${message}\n`);
  process.exit(code);
}

export interface CommandArguments {
  values: Record<string, string | undefined>;
  positionals: string[];
}

/** The command line parsed with `options` (string options, and --help); exits 2 with the usage on a bad one. */
export function commandArguments(command: ExportCommand, options: NonNullable<ParseArgsConfig['options']>): CommandArguments {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs({ allowPositionals: true, options: { ...options, help: { type: 'boolean', short: 'h' } } });
  } catch (error) {
    fail(command, 2, `${(error as Error).message}\n${command.usage}`);
  }
  if (args.values.help) {
    process.stdout.write(`${command.usage}\n`);
    process.exit(0);
  }
  return { values: args.values as Record<string, string | undefined>, positionals: args.positionals };
}

/**
 * How a command that reads MHV's export ends on an error: the line it writes to stderr and its
 * exit code, 2 for the export's fault (`isInputError`) or a file it cannot read, 1 for anything
 * else. The message never holds a value from the export.
 */
function exportCommandFailure(
  command: string,
  exportPath: string | undefined,
  error: unknown,
  isInputError: (error: unknown) => boolean,
): { message: string; exitCode: number } {
  const code = (error as NodeJS.ErrnoException).code;
  if (isInputError(error)) return { message: `${command}: ${exportPath ?? 'the export'}: ${(error as Error).message}\n`, exitCode: 2 };
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR')
    return { message: `${command}: cannot read ${exportPath} (${code})\n`, exitCode: 2 };
  return { message: `${command}: ${(error as Error).message}\n`, exitCode: 1 };
}

/**
 * A pool on the service's database. The whole config is validated, so that DATABASE_URL_FILE works
 * as in the service; an embedded database would be empty, so DATABASE_URL is required.
 */
function serviceDatabase(command: ExportCommand): Sql {
  let databaseUrl: string | undefined;
  try {
    databaseUrl = loadConfig().DATABASE_URL;
  } catch (error) {
    if (error instanceof ConfigError) fail(command, 2, error.message);
    throw error;
  }
  if (databaseUrl === undefined) fail(command, 2, 'DATABASE_URL (or DATABASE_URL_FILE) must name the service database');
  return connect(databaseUrl, { max: 2, applicationName: `rx-tracking-email ${command.name}` });
}

/**
 * Runs `work` on a pool on the service's database, closes the pool and exits: 0 when it succeeded,
 * else as exportCommandFailure says.
 */
export async function runAndExit(
  command: ExportCommand,
  exportPath: string | undefined,
  isInputError: (error: unknown) => boolean,
  work: (sql: Sql) => Promise<void>,
): Promise<never> {
  const sql = serviceDatabase(command);
  let exitCode = 0;
  try {
    await work(sql);
  } catch (error) {
    const failure = exportCommandFailure(command.name, exportPath, error, isInputError);
    process.stderr.write(failure.message);
    exitCode = failure.exitCode;
  } finally {
    await sql.end({ timeout: 5 });
  }
  process.exit(exitCode);
}
