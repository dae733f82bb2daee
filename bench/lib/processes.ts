// Starting the service, the sandboxes and a bare Fastify as child processes (see child.ts).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SandboxVaNotifyOptions } from '../../src/sandbox/va-notify.ts';
import { startChild, type Child } from './child.ts';
import { startCommand } from '../../scripts/start-command.ts';
import { postAll } from './load.ts';
import { progress } from './report.ts';
import type { SandboxCounts } from './sandbox-process.ts';

export const internalToken = 'bench-internal-token-0001';
export const callbackToken = 'bench-callback-token-0001';
export const internalHeaders = { authorization: `Bearer ${internalToken}` };
export const callbackHeaders = { authorization: `Bearer ${callbackToken}`, 'content-type': 'application/json' };
export const hl7Headers = { ...internalHeaders, 'content-type': 'application/hl7-v2' };

/** Posts HL7 bodies to the service's ingest, four at a time; any answer but a 2xx fails the run. */
export async function postHl7Bodies(serviceUrl: string, bodies: string[]): Promise<void> {
  const posted = await postAll({ url: `${serviceUrl}/v1/dispenses`, bodies, headers: hl7Headers, concurrency: 4 });
  if (posted.failures > 0) throw new Error(`${posted.failures} ingest answers were not 2xx`);
}

const here = (file: string) => new URL(file, import.meta.url).pathname;
const logDir = mkdtempSync(join(tmpdir(), 'rx-bench-logs-'));
// The service logs are kept only when one of them holds an error line (the run says where), or
// always with BENCH_KEEP_LOGS=1 (to read a run's logs, a GC trace say).
let keepLogs = process.env.BENCH_KEEP_LOGS === '1';
process.once('exit', () => {
  if (!keepLogs) rmSync(logDir, { recursive: true, force: true });
});

/**
 * Settings every benchmark runs the service with: production's defaults except that the driver,
 * one client address, is not throttled by the per-address limits, and jobs run when the driver
 * triggers them (a stage says otherwise where it needs to). Logs are written at info, as in
 * production, to a file.
 */
export function serviceSettings(databaseUrl: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    LOG_LEVEL: 'info',
    INTERNAL_API_TOKENS: internalToken,
    VA_NOTIFY_CALLBACK_TOKENS: callbackToken,
    RATE_LIMIT_PER_MINUTE: '100000000',
    CALLBACK_RATE_LIMIT_PER_MINUTE: '100000000',
    VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '0',
    JOBS_ENABLED: 'false',
    ...overrides,
    // Experiments: BENCH_SERVICE_ENV='{"LOG_LEVEL":"warn"}' runs every service of a stage with these settings too.
    ...(JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>),
  };
}

export interface Service {
  url: string;
  pid: number;
  logFile: string;
  peakRss(): Promise<number>;
  /** Stops the service; returns its peak RSS and how many error lines it logged. */
  stop(): Promise<{ peakRssBytes: number; errorLines: number }>;
  /** POST /v1/jobs/<name>: runs the job once in the service and returns its result. */
  trigger<R>(job: 'grouping' | 'send' | 'aal' | 'sweep' | 'retention'): Promise<R>;
}

let serviceCount = 0;

/** Where a stage that calls neither VA Notify nor the AAL points the service: nothing listens there. */
const nowhere = { vaNotify: 'http://127.0.0.1:9', aal: 'http://127.0.0.1:9' };

export async function startService(
  settings: Record<string, string>,
  sandboxUrls: { vaNotify: string; aal: string } = nowhere,
): Promise<Service> {
  const logFile = join(logDir, `service-${++serviceCount}.log`);
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  // npm start's node flags (the heap caps), then experiments: BENCH_SERVICE_NODE_ARGS='--max-old-space-size=256'
  // runs the service's node with these flags too (a later flag wins).
  const nodeArgs = [...startCommand().nodeFlags, ...(process.env.BENCH_SERVICE_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '')];
  const child: Child<{ url: string }> = await startChild(here('./service-process.ts'), {
    env: { BENCH_SERVICE_SETTINGS: JSON.stringify(settings), BENCH_SANDBOX_URLS: JSON.stringify(sandboxUrls) },
    stdoutFile: logFile,
    execArgv: [...profile, ...nodeArgs],
  });
  const { url } = child.ready;
  progress(`service: pid ${child.pid} at ${url}, logs in ${logFile}`);
  return {
    url,
    pid: child.pid,
    logFile,
    peakRss: () => child.call<number>('peakRss'),
    async stop() {
      const peakRssBytes = await child.call<number>('peakRss');
      await child.stop();
      const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      const errorLines = text.split('\n').filter((line) => /"level":(50|60)/.test(line)).length;
      if (errorLines > 0) {
        keepLogs = true;
        progress(`service logged ${errorLines} error lines: see ${logFile}`);
      }
      return { peakRssBytes, errorLines };
    },
    async trigger<R>(job: string) {
      const response = await fetch(`${url}/v1/jobs/${job}`, { method: 'POST', headers: internalHeaders });
      if (!response.ok) throw new Error(`POST /v1/jobs/${job} answered ${response.status}: ${await response.text()}`);
      return (await response.json()) as R;
    },
  };
}

export interface Sandboxes {
  vaNotify: string;
  aal: string;
  counts(): Promise<SandboxCounts>;
  setCallbackUrl(url: string | null): Promise<void>;
  setLatency(ms: number): Promise<void>;
  whenIdle(): Promise<void>;
  forgetCallbacks(): Promise<void>;
  stop(): Promise<void>;
}

/** The sandbox VA Notify (service-level callbacks with the bench token) and the sandbox AAL. */
export async function startSandboxes(options: SandboxVaNotifyOptions = {}): Promise<Sandboxes> {
  const child: Child<{ vaNotify: string; aal: string }> = await startChild(here('./sandbox-process.ts'), {
    env: { BENCH_SANDBOX_OPTIONS: JSON.stringify({ callbackToken, callbackDelayMs: 0, ...options }) },
  });
  return {
    ...child.ready,
    counts: () => child.call('counts'),
    setCallbackUrl: (url) => child.call('setCallbackUrl', { url }),
    setLatency: (ms) => child.call('setFaults', { faults: { latencyMs: ms } }),
    whenIdle: () => child.call('whenIdle'),
    forgetCallbacks: () => child.call('forgetCallbacks'),
    stop: () => child.stop(),
  };
}

export async function startBareFastify(): Promise<{ url: string; stop(): Promise<void> }> {
  const child: Child<{ url: string }> = await startChild(here('./bare-fastify-process.ts'));
  return { url: child.ready.url, stop: () => child.stop() };
}
