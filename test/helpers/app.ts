// Builds the app the way server.ts does, with explicit test config and a log that tests can read.
import { Writable } from 'node:stream';
import { buildApp } from '../../src/app.ts';
import { testConfig, type Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startSandboxAal, type SandboxAal } from '../../src/sandbox/aal.ts';
import { testDatabase, type TestDatabase } from './database.ts';

export const internalToken = 'test-internal-token-0001';
export const internalAuth = { authorization: `Bearer ${internalToken}` };

/** Collects every log line the app writes, so tests can assert what is (not) in them. */
export class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void) {
    this.lines.push(...chunk.toString('utf8').split('\n').filter((line) => line.length > 0));
    done();
  }
  get text(): string {
    return this.lines.join('\n');
  }
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface TestApp {
  app: Awaited<ReturnType<typeof buildApp>>;
  db: TestDatabase;
  config: Config;
  logs: LogCapture;
  aal: SandboxAal;
}

/** A fresh database and an app on it; overrides are environment-style settings. */
export async function testApp(
  t: Teardown,
  overrides: Record<string, string | undefined> = {},
  existing?: { db?: TestDatabase; aal?: SandboxAal },
): Promise<TestApp> {
  const db = existing?.db ?? (await testDatabase(t));
  const config = testConfig({ LOG_LEVEL: 'info', ...overrides });
  const logs = new LogCapture();
  const aal = existing?.aal ?? (await startSandboxAal());
  if (!existing?.aal) t.teardown(() => aal.close());
  const app = await buildApp({
    config,
    sql: db.sql,
    logger: createLogger(config.LOG_LEVEL, logs),
    sandboxUrls: { aal: aal.url },
  });
  await app.ready();
  t.teardown(() => app.close());
  return { app, db, config, logs, aal };
}
