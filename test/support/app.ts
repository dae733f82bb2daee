// Builds the app the way server.ts does, with explicit test config, sandbox VA Notify and AAL servers
// on loopback, and a log that tests can read.
import { Writable } from 'node:stream';
import { buildApp, type AppOptions } from '../../src/app.ts';
import { testConfig, type Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startSandboxAal, type SandboxAal } from '../../src/sandbox/aal.ts';
import { startSandboxVaNotify, type SandboxVaNotify, type SandboxVaNotifyOptions } from '../../src/sandbox/va-notify.ts';
import { testDatabase, type TestDatabase } from './database.ts';

export const internalToken = 'test-internal-token-0001';
export const internalAuth = { authorization: `Bearer ${internalToken}` };
export const callbackToken = 'test-callback-token-0001';

/** Collects every log line the app writes, so tests can assert what is (not) in them. */
export class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void) {
    this.lines.push(
      ...chunk
        .toString('utf8')
        .split('\n')
        .filter((line) => line.length > 0),
    );
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
  vaNotify: SandboxVaNotify;
  /** The app's base URL when started with `listen: true`. */
  url?: string;
}

export interface TestAppOptions {
  db?: TestDatabase;
  aal?: SandboxAal;
  vaNotify?: SandboxVaNotify;
  /** Options for the sandbox VA Notify this helper starts (callbacks are immediate unless given). */
  vaNotifyOptions?: SandboxVaNotifyOptions;
  /** Listen on a loopback port, so that the sandbox VA Notify can post callbacks to the app. */
  listen?: boolean;
  /** Event-bus consumer overrides (an OAUTHBEARER token provider, a client id). */
  eventBus?: AppOptions['eventBus'];
}

/** A fresh database (unless given) and an app on it; overrides are environment-style settings. */
export async function testApp(
  t: Teardown,
  overrides: Record<string, string | undefined> = {},
  options: TestAppOptions = {},
): Promise<TestApp> {
  const db = options.db ?? (await testDatabase(t));
  const config = testConfig({ LOG_LEVEL: 'info', ...overrides });
  const logs = new LogCapture();
  const aal = options.aal ?? (await startSandboxAal());
  if (!options.aal) t.teardown(() => aal.close());
  const vaNotify = options.vaNotify ?? (await startSandboxVaNotify({ callbackToken, callbackDelayMs: 0, ...options.vaNotifyOptions }));
  if (!options.vaNotify) t.teardown(() => vaNotify.close());
  const app = await buildApp({
    config,
    sql: db.sql,
    logger: createLogger(config.LOG_LEVEL, logs),
    sandboxUrls: { aal: aal.url, vaNotify: vaNotify.url },
    ...(options.eventBus && { eventBus: options.eventBus }),
  });
  t.teardown(() => app.close());
  let url: string | undefined;
  if (options.listen) {
    url = await app.listen({ port: 0, host: '127.0.0.1' });
    vaNotify.setCallbackUrl(`${url}/v1/va-notify/callbacks`);
  } else {
    await app.ready();
  }
  return { app, db, config, logs, aal, vaNotify, url };
}

/** Runs a job as its timer would (POST /v1/jobs/{name}) and returns the run's summary. */
export async function runJob(app: TestApp['app'], name: string) {
  const response = await app.inject({ method: 'POST', url: `/v1/jobs/${name}`, headers: internalAuth });
  if (response.statusCode !== 200) throw new Error(`POST /v1/jobs/${name} answered ${response.statusCode}: ${response.body}`);
  return response.json();
}
