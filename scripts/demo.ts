// npm run demo: the whole pipeline in one command. Starts the service (the same start path as
// npm start) against the sandbox VA Notify and AAL, on a database of its own, posts the samples, runs
// the jobs and prints what happened to each dispense, email and AAL event. The service's own log goes
// to .data/demo-service.log.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { startCommand } from './start-command.ts';
import { DevelopmentSecrets } from '../src/config.ts';
import { freePortBelowEphemeralRange } from '../src/db/embedded.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const samples = join(root, 'samples');
const logPath = join(root, '.data', 'demo-service.log');
const token = DevelopmentSecrets.INTERNAL_API_TOKENS;

/** Settings for the tour: group at once, replay a temporary failure at once, callbacks within a moment. */
const tourSettings = {
  NODE_ENV: 'development',
  GROUPING_QUIET_MINUTES: '0',
  REPLAY_DELAY_MINUTES: '0',
  SANDBOX_CALLBACK_DELAY_MS: '200',
  // The tour runs each job itself, so that what it prints follows the data's travel.
  JOBS_ENABLED: 'false',
  LOG_LEVEL: 'info',
};

const posts: { file: string; contentType: string; what: string }[] = [
  { file: 'rds-r06-batch.hl7', contentType: 'application/hl7-v2', what: 'RDS^R06 batch: three messages, one a cancelled fill' },
  { file: 'rds-o13-one-package-two-rx.hl7', contentType: 'application/hl7-v2', what: 'RDS^O13: two prescriptions in one package' },
  { file: 'rrd-o14-vista-encoding-cr.hl7', contentType: 'x-application/hl7-v2+er7', what: "RRD^O14 with VistA's encoding characters" },
  { file: 'dispense-events.json', contentType: 'application/json', what: 'canonical JSON: two events' },
  {
    file: 'sandbox-outcomes.json',
    contentType: 'application/json',
    what: 'two veterans whose ICNs make the sandbox fail (…000001) and fail for now (…000002)',
  },
  { file: 'bad/no-icn.hl7', contentType: 'application/hl7-v2', what: 'no ICN: kept as unprocessable, answered AE' },
  { file: 'bad/not-hl7.txt', contentType: 'text/plain', what: 'not HL7 at all: stored, answered 400 and AR' },
];

const out = (line = '') => process.stdout.write(`${line}\n`);
const heading = (line: string) => out(`\n== ${line}`);
const indent = (text: string, by = '    ') =>
  text
    .split('\n')
    .map((line) => by + line)
    .join('\n');

interface Service {
  url: string;
  child: ChildProcess;
  exited: Promise<unknown>;
}

// What the tour reads of the API's answers; src/operator/schemas.ts and src/jobs/routes.ts describe them whole.

/** GET /v1/stats: counts by state. */
interface Stats {
  dispenses: Record<string, number>;
  emails: Record<string, number>;
  notifications: Record<string, number>;
  aalEvents: Record<string, number>;
}

/** GET /v1/tracking-emails/{id}. */
interface TrackingEmail {
  id: string;
  patientIcn: string;
  packageCount: number;
  prescriptionCount: number;
  state: string;
  stateReason: string | null;
  personalisation: Record<string, unknown>;
  notifications: {
    id: string;
    attempt: number;
    status: string;
    statusReason: string | null;
    history: { status: string; source: string }[];
  }[];
  aalEvent: { state: string; postedAt: string | null; lastError: string | null } | null;
}

interface GroupingResult {
  dispensesGrouped: number;
  emailsCreated: number;
}

interface SendResult {
  sent: number;
  failed: number;
  retried: number;
}

interface AalResult {
  posted: number;
  retried: number;
  failed: number;
}

/** The counts are absent when another instance was sweeping at the time. */
interface SweepResult {
  replayed?: number;
  polled?: number;
  failed?: number;
}

/** A database of the tour's own: a fresh one on DATABASE_URL's server, or a fresh embedded PostgreSQL. */
async function demoDatabase(): Promise<{ env: Record<string, string>; cleanup: () => Promise<void> }> {
  const serverUrl = process.env.DATABASE_URL;
  if (serverUrl) {
    const name = `rx_demo_${process.pid}_${Date.now()}`;
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    return {
      env: { DATABASE_URL: url.toString() },
      cleanup: async () => {
        await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
        await admin.end({ timeout: 1 });
      },
    };
  }
  const dir = join(root, '.data', `demo-postgres-${process.pid}-${Date.now()}`);
  return { env: { EMBEDDED_PG_DIR: dir }, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
}

async function startService(databaseEnv: Record<string, string>): Promise<Service> {
  const port = await freePortBelowEphemeralRange();
  mkdirSync(join(root, '.data'), { recursive: true });
  const log = createWriteStream(logPath);
  const { nodeFlags, entry } = startCommand();
  // Only what the tour needs from the environment: a VA_NOTIFY_BASE_URL left set in a shell must not
  // send the tour's emails anywhere real.
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    ...tourSettings,
    ...databaseEnv,
    PORT: String(port),
    HOST: '127.0.0.1',
  };
  const child = spawn(process.execPath, [...nodeFlags, entry], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = once(child, 'exit');
  const url = `http://127.0.0.1:${port}`;
  // The first start of an embedded PostgreSQL runs initdb: give it a minute.
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`the service exited during startup (exit code ${child.exitCode}); see ${logPath}`);
    if (
      await fetch(`${url}/health/ready`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return { url, child, exited };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`the service did not become ready within a minute; see ${logPath}`);
}

async function api<T>(service: Service, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${service.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** `state n, ...` in the states' alphabetical order, whatever order the stats list them in. */
const counts = (byState: Record<string, number>) =>
  Object.entries(byState)
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, n]) => `${state} ${n}`)
    .join(', ') || 'none';

/** Emails in the list, newest first, with their details. */
async function emails(service: Service): Promise<TrackingEmail[]> {
  const list = await api<{ emails: { id: string }[] }>(service, 'GET', '/v1/tracking-emails?limit=500');
  return Promise.all(list.emails.map((email) => api<TrackingEmail>(service, 'GET', `/v1/tracking-emails/${email.id}`)));
}

/** Waits until VA Notify has called back for every send (no email left in sending or sent). */
async function callbacksIn(service: Service): Promise<void> {
  for (let i = 0; i < 150; i++) {
    const stats = await api<Stats>(service, 'GET', '/v1/stats');
    if (!stats.emails.sending && !stats.emails.sent) return;
    await sleep(100);
  }
  throw new Error('VA Notify did not call back for every email within 15 seconds');
}

const veteran = (icn: string) => `veteran …${icn.slice(-6)}`;

function printEmail(email: TrackingEmail): void {
  out(
    `  email ${email.id}  ${veteran(email.patientIcn)}  ${email.packageCount} package(s), ${email.prescriptionCount} prescription(s)  → ${email.state}${email.stateReason ? ` (${email.stateReason})` : ''}`,
  );
  const body = String(email.personalisation?.tracking_info ?? '');
  if (body) out(indent(body, '      | '));
  for (const n of email.notifications) {
    const history = n.history.map((h) => h.status + (h.source === 'callback' ? '' : ` (${h.source})`)).join(' → ');
    out(`      send ${n.attempt}: notification ${n.id}: ${history || n.status}${n.statusReason ? ` — ${n.statusReason}` : ''}`);
  }
  const aal = email.aalEvent;
  if (aal) out(`      AAL event: ${aal.state}${aal.postedAt ? ` at ${aal.postedAt}` : ''}${aal.lastError ? ` (${aal.lastError})` : ''}`);
}

async function tour(service: Service): Promise<{ delivered: number; posted: number }> {
  heading('1. CMOP dispenses arrive: POST /v1/dispenses');
  for (const post of posts) {
    const response = await fetch(`${service.url}/v1/dispenses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': post.contentType },
      body: readFileSync(join(samples, post.file)),
    });
    const text = await response.text();
    out(`  samples/${post.file} (${post.what})`);
    out(`    ${post.contentType} → ${response.status}`);
    // HL7 answers are segments ended by CR, which a terminal would print over one another.
    if (response.headers.get('content-type')?.includes('hl7'))
      out(
        indent(
          text
            .split(/\r\n|\r|\n/)
            .filter((s) => s !== '')
            .join('\n'),
          '      ',
        ),
      );
    else out(indent(JSON.stringify(JSON.parse(text)), '      '));
  }
  let stats = await api<Stats>(service, 'GET', '/v1/stats');
  out(`  dispenses: ${counts(stats.dispenses)}`);

  heading('2. Grouping: one tracking email per veteran (POST /v1/jobs/grouping)');
  const grouping = await api<GroupingResult>(service, 'POST', '/v1/jobs/grouping');
  out(`  ${grouping.dispensesGrouped} dispenses grouped into ${grouping.emailsCreated} emails`);

  heading('3. Sending through the sandbox VA Notify (POST /v1/jobs/send), then its delivery-status callbacks');
  const send = await api<SendResult>(service, 'POST', '/v1/jobs/send');
  out(`  sent ${send.sent}, failed ${send.failed}, retried ${send.retried}`);
  await callbacksIn(service);
  stats = await api<Stats>(service, 'GET', '/v1/stats');
  out(`  emails after the callbacks: ${counts(stats.emails)}`);

  heading('4. AAL: one Account Activity Log event per delivered email (POST /v1/jobs/aal)');
  const aal = await api<AalResult>(service, 'POST', '/v1/jobs/aal');
  out(`  posted ${aal.posted}, retried ${aal.retried}, failed ${aal.failed}`);

  heading('5. The sweep replays the temporary failure (POST /v1/jobs/sweep), and it is sent again');
  const sweep = await api<SweepResult>(service, 'POST', '/v1/jobs/sweep');
  out(`  sweep: replayed ${sweep.replayed ?? 0}, polled ${sweep.polled ?? 0}, failed ${sweep.failed ?? 0}`);
  const resend = await api<SendResult>(service, 'POST', '/v1/jobs/send');
  out(`  send: sent ${resend.sent}`);
  await callbacksIn(service);
  out('  (the sandbox fails this veteran for now every time: the sweep replays it until SEND_MAX_ATTEMPTS, then the email is failed)');

  heading('6. The account: every email, its packages, its sends and their statuses, its AAL event');
  const all = await emails(service);
  for (const email of all) printEmail(email);
  stats = await api<Stats>(service, 'GET', '/v1/stats');
  out();
  out(`  dispenses:      ${counts(stats.dispenses)}`);
  out(`  emails:         ${counts(stats.emails)}`);
  out(`  notifications:  ${counts(stats.notifications)}`);
  out(`  AAL events:     ${counts(stats.aalEvents)}`);
  return { delivered: stats.emails.delivered ?? 0, posted: stats.aalEvents.posted ?? 0 };
}

async function main(): Promise<number> {
  out('Rx tracking email service: a tour against the sandbox VA Notify and AAL (no real email is sent)');
  const database = await demoDatabase();
  let service: Service | undefined;
  try {
    service = await startService(database.env);
    out(`service on ${service.url}; its log: ${logPath}; API reference: ${service.url}/documentation`);
    const { delivered, posted } = await tour(service);
    out();
    out(`${delivered} emails delivered, ${posted} AAL events posted.`);
    return delivered > 0 && posted > 0 ? 0 : 1;
  } catch (error) {
    out(`\nThe tour stopped: ${(error as Error).message}`);
    return 1;
  } finally {
    if (service && service.child.exitCode === null) {
      service.child.kill('SIGTERM');
      await service.exited;
    }
    await database.cleanup();
  }
}

process.exitCode = await main();
