// The AAL worker on a real database against the sandbox AAL: every delivered email's event reaches
// the AAL exactly once, whatever the AAL does in between.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  aalPostingPausedUntil,
  releaseExpiredAalLeases,
  resumeAalPosting,
  runAalPosts,
  type AalRunOutcome,
  type AalWorkerDeps,
} from '../../src/aal/aal-worker.ts';
import type { AalClient } from '../../src/aal/aal-client.ts';
import { claimAalEvents, recordAalEventFailed, recordAalEventPosted, pauseAalPosting, releaseAalEvents } from '../../src/aal/repository.ts';
import { testConfig } from '../../src/config.ts';
import { connect } from '../../src/db/connect.ts';
import { UuidText } from '../../src/http/schemas.ts';
import { createLogger } from '../../src/logger.ts';
import { internalAuth, LogCapture, testApp } from '../support/app.ts';
import { testDatabase, type TestDatabase } from '../support/database.ts';
import type { SqlHandle } from '../../src/db/connect.ts';
import { aalCredentials, aalEvent, backoffElapses, client, fastRetry, insertDeliveredEmail, sandbox } from '../support/aal.ts';

function worker(db: TestDatabase, aal: AalClient, overrides: Record<string, string> = {}, extra: Partial<AalWorkerDeps> = {}) {
  const logs = new LogCapture();
  const deps: AalWorkerDeps = {
    sql: db.sql,
    config: testConfig(overrides),
    aal,
    log: createLogger('debug', logs),
    quickRetry: fastRetry,
    ...extra,
  };
  return { run: () => runAalPosts(deps), logs };
}

t.test('one post per event, with the right headers and body', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const completionTime = new Date('2026-05-14T13:22:41.250Z');
  const first = await insertDeliveredEmail(db.sql, {
    correlationId: '15176497',
    completionTime,
    detailValue: 'Tracking #: 1Z999AA10123456784 (UPS) RX #: ...9043, ...1187',
  });
  const second = await insertDeliveredEmail(db.sql, {
    correlationId: '15176497',
    completionTime: new Date('2026-05-15T08:01:02Z'),
    detailValue: 'Tracking #: 9400111899223856921234 (USPS) RX #: ...5521',
  });
  const other = await insertDeliveredEmail(db.sql, {
    correlationId: '20334455',
    completionTime,
    detailValue: 'Tracking #: 1Z999AA10123456799 (UPS) RX #: ...0004',
  });
  const outcomes: AalRunOutcome[] = [];
  const { run, logs } = worker(db, client(aal), {}, { onOutcome: (o) => outcomes.push(o) });

  t.same(await run(), { posted: 3, retried: 0, failed: 0, released: 0, paused: false });
  t.same(outcomes, ['posted', 'posted', 'posted']);
  t.equal(aal.state.events.length, 3);
  const byDetail = new Map(aal.state.events.map((e) => [e.body.detailValue, e]));
  const posted = byDetail.get('Tracking #: 1Z999AA10123456784 (UPS) RX #: ...9043, ...1187')!;
  t.strictSame(posted.body, {
    userProfileId: 15176497,
    activityType: 'Rx Tracking Email',
    action: 'Rx Tracking Email Delivered',
    completionTime: 'Thu, 14 May 2026 13:22:41 GMT',
    performerType: 'System',
    detailValue: 'Tracking #: 1Z999AA10123456784 (UPS) RX #: ...9043, ...1187',
    status: 1,
  });
  t.equal(posted.body.completionTime, completionTime.toUTCString(), 'completionTime is the HTTP date of completion_time');
  t.equal(byDetail.get('Tracking #: 9400111899223856921234 (USPS) RX #: ...5521')!.body.completionTime, 'Fri, 15 May 2026 08:01:02 GMT');
  for (const event of aal.state.events) {
    t.equal(event.headers.xApiKey, aalCredentials.apiKey);
    t.match(event.headers.contentType, /^application\/json/);
    t.equal(String(event.body.userProfileId), event.sessionCorrelationId, "each post carries its own veteran's session");
  }
  t.equal(aal.state.sessionsFor('15176497'), 1, 'one session for two events of one veteran');
  t.equal(aal.state.sessionsFor('20334455'), 1, 'a new session for another veteran');

  for (const { aalEventId } of [first, second, other]) {
    const row = await aalEvent(db.sql, aalEventId);
    t.match(row, { state: 'posted', attempts: 1, last_error: null, lease_until: null });
    t.ok(row.posted_at instanceof Date);
  }
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: false }, 'a second run posts nothing');
  t.equal(aal.state.events.length, 3);
  t.match(logs.text, /AAL event posted/);
});

t.test('AAL down for a while, then up: posting pauses, no event is charged past the first two, every event posted once', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const events = await Promise.all(['111', '222', '333'].map((id) => insertDeliveredEmail(db.sql, { correlationId: id })));
  const { run, logs } = worker(
    db,
    client(aal),
    {},
    { config: { ...testConfig(), AAL_INTERVAL_SECONDS: 60, AAL_UNAVAILABLE_PAUSE_SECONDS: 1 } },
  );
  const rows = () => Promise.all(events.map(({ aalEventId }) => aalEvent(db.sql, aalEventId)));

  aal.state.down = true;
  t.same(
    await run(),
    { posted: 0, retried: 2, failed: 0, released: 1, paused: true },
    'two events in a row without an answer are bad luck; the third is an outage',
  );
  t.equal(aal.state.requests.length, 9, 'three quick attempts per event, no more');
  const first = (await rows()).sort((a, b) => b.attempts - a.attempts);
  for (const row of first.slice(0, 2)) {
    t.match(row, { state: 'pending', attempts: 1, lease_until: null, last_error: /AAL answered 503/ });
    t.ok(
      row.due_in_seconds > 25 && row.due_in_seconds <= 95,
      `first backoff is about one interval with jitter (${row.due_in_seconds.toFixed(1)} s)`,
    );
  }
  t.match(first[2], { state: 'pending', attempts: 0, lease_until: null }, 'the third goes back uncharged');
  t.ok(
    first[2]!.due_in_seconds > 55 && first[2]!.due_in_seconds <= 60,
    'due after the first retry delay, so that another event probes next',
  );
  t.match(await aalPostingPausedUntil(db.sql), { reason: /^AAL unavailable: .*503/ });
  t.match(logs.text, /the AAL is not answering: AAL posting is paused on every instance/);
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: true }, 'nothing during the pause');

  for (let probe = 1; probe <= 3; probe++) {
    await pauseEnds(db.sql);
    await backoffElapses(db.sql);
    t.same(
      await run(),
      { posted: 0, retried: 0, failed: 0, released: 3, paused: true },
      `probe ${probe}: the first unanswered event pauses again`,
    );
  }
  t.same((await rows()).map((r) => r.attempts).sort(), [0, 1, 1], 'no event charged by the probes');

  aal.state.down = false;
  await pauseEnds(db.sql);
  await backoffElapses(db.sql);
  t.same(await run(), { posted: 3, retried: 0, failed: 0, released: 0, paused: false });
  const [pause] = await db.sql`select count(*)::int as n from aal_pause`;
  t.equal(pause!.n, 0, 'a posted event ends the probing');
  await backoffElapses(db.sql);
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: false });
  t.same(aal.state.events.map((e) => e.body.userProfileId).sort(), [111, 222, 333], 'each event once');
  t.same((await rows()).map((r) => [r.state, r.attempts]).sort(), [
    ['posted', 1],
    ['posted', 2],
    ['posted', 2],
  ]);
});

t.test('a flaky AAL is absorbed by the quick retries', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const { aalEventId } = await insertDeliveredEmail(db.sql, { correlationId: '444' });
  aal.state.failNext = 2;
  t.same(await worker(db, client(aal)).run(), { posted: 1, retried: 0, failed: 0, released: 0, paused: false });
  t.equal(aal.state.events.length, 1);
  t.match(await aalEvent(db.sql, aalEventId), { state: 'posted', attempts: 1 });
});

t.test('transient failures stop at AAL_MAX_ATTEMPTS', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const { aalEventId } = await insertDeliveredEmail(db.sql, { correlationId: '555' });
  const { run, logs } = worker(db, client(aal), { AAL_MAX_ATTEMPTS: '2' });
  aal.state.failRate = 1;
  t.same(await run(), { posted: 0, retried: 1, failed: 0, released: 0, paused: false });
  await backoffElapses(db.sql);
  t.same(await run(), { posted: 0, retried: 0, failed: 1, released: 0, paused: false });
  t.match(await aalEvent(db.sql, aalEventId), { state: 'failed', attempts: 2, last_error: /AAL answered 500.*gave up after 2 attempts/ });
  await backoffElapses(db.sql);
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: false }, 'a failed event is left alone');
  t.match(logs.text, /attempts used up/);
});

t.test('a session expiring between posts is renewed, and the event posted once', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const aalClient = client(aal);
  const { run } = worker(db, aalClient);
  const first = await insertDeliveredEmail(db.sql, { correlationId: '666' });
  t.same(await run(), { posted: 1, retried: 0, failed: 0, released: 0, paused: false });

  aal.state.expireAllSessions();
  const second = await insertDeliveredEmail(db.sql, { correlationId: '666', detailValue: 'Tracking #: 2' });
  t.same(await run(), { posted: 1, retried: 0, failed: 0, released: 0, paused: false });
  t.equal(aal.state.sessionsFor('666'), 2, 'renewed once');
  t.equal(aal.state.postsRejected, 1, 'the stale token was refused once');
  t.same(
    aal.state.events.map((e) => e.body.detailValue).filter((d) => d === 'Tracking #: 2'),
    ['Tracking #: 2'],
    'posted once',
  );
  t.match(await aalEvent(db.sql, first.aalEventId), { state: 'posted' });
  t.match(await aalEvent(db.sql, second.aalEventId), { state: 'posted', attempts: 1 });
});

t.test('a 400 fails the event with the reason, after one request', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const { aalEventId } = await insertDeliveredEmail(db.sql, { correlationId: '777' });
  aal.state.forceStatus = { status: 400, message: 'detailValue exceeds 255 characters' };
  const { run } = worker(db, client(aal));
  t.same(await run(), { posted: 0, retried: 0, failed: 1, released: 0, paused: false });
  t.equal(aal.state.requests.filter((r) => r.path.endsWith('/activity')).length, 1, 'one activity request, no retries');
  t.match(await aalEvent(db.sql, aalEventId), {
    state: 'failed',
    attempts: 1,
    last_error: 'AAL answered 400: detailValue exceeds 255 characters',
  });
  t.equal(await aalPostingPausedUntil(db.sql), undefined, 'a refused event pauses nothing');
  aal.state.forceStatus = undefined;
  await backoffElapses(db.sql);
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: false });
  t.equal(aal.state.events.length, 0);
});

/** The pause as the database sees it: seconds until it ends, and its reason. */
async function pauseRow(sql: SqlHandle) {
  const [row] = await sql<{ endsInSeconds: number; reason: string }[]>`
    select extract(epoch from paused_until - now())::float8 as "endsInSeconds", pause_reason as reason from aal_pause`;
  return row;
}

/** Waits until a short pause has ended, as the database's clock sees it. */
async function pauseEnds(sql: SqlHandle): Promise<void> {
  for (let i = 0; i < 50 && (await aalPostingPausedUntil(sql)) !== undefined; i += 1) await sleep(100);
}

const errorLines = (lines: string[]) => lines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
const activityRequests = (aal: { state: { requests: { path: string }[] } }) =>
  aal.state.requests.filter((r) => r.path.endsWith('/activity')).length;
const credentialAdvice = /MHV refused our AAL credentials: .*paused on every instance.*check AAL_API_KEY.*AAL_APP_TOKEN/;

t.test('a 403 on the post fails and charges nothing, pauses posting on every instance, and logs one error line', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const correlationIds = ['31415926', '27182818', '16180339', '14142135'];
  const events = [];
  for (const id of correlationIds) events.push(await insertDeliveredEmail(db.sql, { correlationId: id }));
  const outcomes: AalRunOutcome[] = [];
  const { run, logs } = worker(db, client(aal), {}, { concurrency: 2, onOutcome: (o) => outcomes.push(o) });
  aal.state.forceStatus = { status: 403, message: `Invalid API key (user ${correlationIds[0]})` };

  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 4, paused: true });
  t.same(outcomes, ['released', 'released', 'released', 'released'], 'every claim counted as released, none as failed');
  t.equal(activityRequests(aal), 2, 'the two posts in flight were refused; none retried and no new one started');
  for (const { aalEventId } of events) {
    const row = await aalEvent(db.sql, aalEventId);
    t.match(row, { state: 'pending', attempts: 0, lease_until: null, last_error: null, posted_at: null }, 'pending, attempt refunded');
    t.ok(row.due_in_seconds <= 0, 'due: the pause alone holds it back');
  }
  const pause = await pauseRow(db.sql);
  t.ok(
    pause && pause.endsInSeconds > 290 && pause.endsInSeconds <= 300,
    `paused for the default 300 s (${pause?.endsInSeconds.toFixed(1)} s)`,
  );
  // Whichever post was refused first, no veteran's id is kept: its own is scrubbed, another's masked.
  const echoed = /^AAL answered 403: Invalid API key \(user \[(userProfileId|number)\]\)$/;
  t.match(pause?.reason, echoed);

  const errors = errorLines(logs.lines);
  t.equal(errors.length, 1, 'one error line for the run, however many posts were refused');
  t.match(errors[0], credentialAdvice);
  t.match(JSON.parse(errors[0]!), { status: 403, aalMessage: echoed, aalEventId: Number, emailId: String, pausedUntil: String });
  for (const id of correlationIds) t.notMatch(logs.text, id, 'no correlation id in the logs');

  // The pause is in the database: this instance and any other skip their runs, even once the key works.
  aal.state.forceStatus = undefined;
  const requestsBefore = aal.state.requests.length;
  const otherPool = connect(db.url, { max: 2 });
  t.teardown(() => otherPool.end({ timeout: 5 }));
  const paused = { posted: 0, retried: 0, failed: 0, released: 0, paused: true };
  t.same(await run(), paused, 'the next run during the pause posts nothing');
  t.same(await worker({ ...db, sql: otherPool }, client(aal)).run(), paused, 'nor does another instance');
  t.equal(aal.state.requests.length, requestsBefore, 'the AAL was not called');
  for (const { aalEventId } of events) t.match(await aalEvent(db.sql, aalEventId), { state: 'pending', attempts: 0 }, 'not claimed');
  t.equal(errorLines(logs.lines).length, 1, 'a paused run logs no further error');
});

t.test('posting resumes by itself when the pause ends; a probe still refused pauses again', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const events = [];
  for (const id of ['50001', '50002']) events.push(await insertDeliveredEmail(db.sql, { correlationId: id }));
  const { run, logs } = worker(db, client(aal), {}, { config: { ...testConfig(), AAL_PAUSE_SECONDS: 1 } });
  aal.state.forceStatus = { status: 403, message: 'Forbidden' };

  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 2, paused: true });
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: true }, 'nothing during the pause');
  await pauseEnds(db.sql);
  t.same(
    await run(),
    { posted: 0, retried: 0, failed: 0, released: 2, paused: true },
    'the probe after the pause, still refused, pauses again',
  );
  t.equal(errorLines(logs.lines).length, 2, 'one error line per pause');
  for (const { aalEventId } of events) t.match(await aalEvent(db.sql, aalEventId), { state: 'pending', attempts: 0 });

  aal.state.forceStatus = undefined;
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: true }, 'a fixed key waits for the pause to end');
  await pauseEnds(db.sql);
  t.same(await run(), { posted: 2, retried: 0, failed: 0, released: 0, paused: false }, 'the next probe posts');
  for (const { aalEventId } of events)
    t.match(await aalEvent(db.sql, aalEventId), { state: 'posted', attempts: 1 }, 'refused claims were never charged');
  t.equal(aal.state.events.length, 2, 'each event posted once');
});

t.test('a 401 to the session request (a wrong appToken) pauses posting as a 403 does', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const { aalEventId } = await insertDeliveredEmail(db.sql, { correlationId: '61001' });
  const { run, logs } = worker(db, client(aal, { appToken: 'not-the-app-token' }));
  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 1, paused: true });
  t.match(await aalEvent(db.sql, aalEventId), { state: 'pending', attempts: 0 });
  t.match(await pauseRow(db.sql), { reason: 'session: AAL answered 401: invalid appToken' });
  t.match(errorLines(logs.lines)[0], credentialAdvice);
});

t.test('a 403 on the session call is handled the same; clearing the pause resumes at once', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const events = [];
  for (const id of ['60001', '60002', '60003']) events.push(await insertDeliveredEmail(db.sql, { correlationId: id }));
  const { run, logs } = worker(db, client(aal));
  aal.state.forceSessionStatus = { status: 403, message: 'Forbidden' };

  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 3, paused: true });
  t.equal(activityRequests(aal), 0, 'no activity post without a session');
  t.equal(aal.state.requests.length, 3, 'one session request per event in flight, none retried');
  for (const { aalEventId } of events)
    t.match(await aalEvent(db.sql, aalEventId), { state: 'pending', attempts: 0, lease_until: null, last_error: null });
  t.match(await pauseRow(db.sql), { reason: 'session: AAL answered 403: Forbidden' });
  const errors = errorLines(logs.lines);
  t.equal(errors.length, 1);
  t.match(errors[0], credentialAdvice);
  t.match(errors[0], /session: AAL answered 403/, 'the line says which call was refused');

  t.same(await run(), { posted: 0, retried: 0, failed: 0, released: 0, paused: true });
  t.equal(aal.state.requests.length, 3, 'nothing asked during the pause');

  aal.state.forceSessionStatus = undefined;
  await resumeAalPosting(db.sql);
  t.equal(await aalPostingPausedUntil(db.sql), undefined);
  t.same(await run(), { posted: 3, retried: 0, failed: 0, released: 0, paused: false }, 'events released during the pause are due at once');
  for (const { aalEventId } of events) t.match(await aalEvent(db.sql, aalEventId), { state: 'posted', attempts: 1 });
});

t.test('a shorter pause never cuts a longer one short; the reason is the latest', async (t) => {
  const db = await testDatabase(t);
  const long = await pauseAalPosting(db.sql, 600, 'AAL answered 403: first');
  t.same(await pauseAalPosting(db.sql, 1, 'AAL answered 403: second'), long);
  t.match(await pauseRow(db.sql), { reason: 'AAL answered 403: second' });
  t.ok((await pauseRow(db.sql))!.endsInSeconds > 590);
  await resumeAalPosting(db.sql);
  t.equal(await pauseRow(db.sql), undefined, 'cleared');
  const short = await pauseAalPosting(db.sql, 1, 'AAL answered 403: third');
  t.ok(short.getTime() < long.getTime(), 'after a clear, a new pause starts afresh');
});

t.test(
  "a refused key through the app: the job answers paused, metrics count releases and raise the AAL pause gauge, not VA Notify's",
  async (t) => {
    const { app, db, aal } = await testApp(t);
    for (const id of ['70001', '70002']) await insertDeliveredEmail(db.sql, { correlationId: id });
    aal.state.forceStatus = { status: 403, message: 'Forbidden' };
    const job = await app.inject({ method: 'POST', url: '/v1/jobs/aal', headers: internalAuth });
    t.equal(job.statusCode, 200);
    t.same(job.json(), { posted: 0, retried: 0, failed: 0, released: 2, paused: true });
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    t.match(metrics, /rx_aal_posts_total\{outcome="released"\} 2/);
    t.notMatch(metrics, /rx_aal_posts_total\{outcome="failed"\}/);
    t.match(metrics, /rx_rows\{table="aal_event",state="pending"\} 2/);
    t.match(metrics, /rx_sending_paused 0/, 'an AAL pause is not a VA Notify pause');
    t.match(metrics, /rx_aal_paused 1/);
    t.ok(await aalPostingPausedUntil(db.sql));
  },
);

t.test('unpostable events are never posted', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const { aalEventId } = await insertDeliveredEmail(db.sql, {
    correlationId: null,
    state: 'unpostable',
    lastError: 'no MHV correlation id',
  });
  // A pending event without a correlation id (written by hand) is kept as unpostable, not posted.
  const stray = await insertDeliveredEmail(db.sql, { correlationId: null });
  const outcomes: string[] = [];
  t.same(
    await worker(db, client(aal), {}, { onOutcome: (outcome) => outcomes.push(outcome) }).run(),
    { posted: 0, retried: 0, failed: 0, released: 0, paused: false },
    'unpostable is not failed',
  );
  t.same(outcomes, [], 'nor counted as a post (rx_aal_posts_total)');
  t.equal(aal.state.requests.length, 0, 'the AAL was never called');
  t.match(await aalEvent(db.sql, aalEventId), { state: 'unpostable', attempts: 0, last_error: 'no MHV correlation id' });
  t.match(await aalEvent(db.sql, stray.aalEventId), { state: 'unpostable', last_error: /no MHV correlation id/ });
});

t.test('two workers at once never post one event twice', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const ids = Array.from({ length: 40 }, (_, i) => String(800_000 + (i % 13)));
  for (const [i, id] of ids.entries()) await insertDeliveredEmail(db.sql, { correlationId: id, detailValue: `Tracking #: ${i}` });
  aal.state.failRate = 0.2;
  const otherPool = connect(db.url, { max: 5 });
  t.teardown(() => otherPool.end({ timeout: 5 }));
  const a = worker(db, client(aal), { AAL_BATCH_SIZE: '7' }, { concurrency: 3 });
  const b = worker({ ...db, sql: otherPool }, client(aal), { AAL_BATCH_SIZE: '7' }, { concurrency: 3 });

  let totalPosted = 0;
  for (let round = 0; round < 40; round += 1) {
    const [ra, rb] = await Promise.all([a.run(), b.run()]);
    totalPosted += ra.posted + rb.posted;
    const [{ left } = { left: 0 }] = await db.sql<
      { left: number }[]
    >`select count(*)::int as "left" from aal_event where state <> 'posted'`;
    if (left === 0) break;
    await backoffElapses(db.sql);
  }
  t.equal(totalPosted, 40);
  const details = aal.state.events.map((e) => e.body.detailValue);
  t.equal(details.length, 40, 'forty accepted posts');
  t.equal(new Set(details).size, 40, 'no event posted twice');
  const [{ posted } = { posted: 0 }] = await db.sql<
    { posted: number }[]
  >`select count(*)::int as posted from aal_event where state = 'posted'`;
  t.equal(posted, 40);
});

t.test('shutdown: no new post starts and unposted claims are released', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  for (const id of ['901', '902', '903', '904']) await insertDeliveredEmail(db.sql, { correlationId: id });
  const controller = new AbortController();
  const { run } = worker(
    db,
    client(aal),
    {},
    {
      concurrency: 1,
      signal: controller.signal,
      onOutcome: (outcome) => {
        if (outcome === 'posted') controller.abort();
      },
    },
  );
  t.same(await run(), { posted: 1, retried: 0, failed: 0, released: 3, paused: false });
  t.equal(aal.state.events.length, 1, 'only the post in flight was made');
  const rows = await db.sql`select state, attempts, lease_until from aal_event where state <> 'posted'`;
  t.equal(rows.length, 3);
  for (const row of rows) t.match(row, { state: 'pending', attempts: 0, lease_until: null });
  t.same(
    await runAalPosts({ sql: db.sql, config: testConfig(), aal: client(aal), log: createLogger('silent'), signal: controller.signal }),
    { posted: 0, retried: 0, failed: 0, released: 0, paused: false },
    'a stopped worker claims nothing',
  );
  t.same(
    await worker(db, client(aal)).run(),
    { posted: 3, retried: 0, failed: 0, released: 0, paused: false },
    'another run picks them up',
  );
});

t.test('expired leases: released by the sweep, or reclaimed by the worker', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const abandoned = await insertDeliveredEmail(db.sql, { correlationId: '1201', state: 'posting' });
  const live = await insertDeliveredEmail(db.sql, { correlationId: '1202', state: 'posting' });
  await db.sql`update aal_event set lease_until = now() - interval '1 minute', attempts = 1 where id = ${abandoned.aalEventId}`;
  await db.sql`update aal_event set lease_until = now() + interval '5 minutes', attempts = 1 where id = ${live.aalEventId}`;
  t.equal(await releaseExpiredAalLeases(db.sql), 1);
  t.match(await aalEvent(db.sql, abandoned.aalEventId), { state: 'pending', attempts: 1, lease_until: null });
  t.match(await aalEvent(db.sql, live.aalEventId), { state: 'posting' }, 'a live claim is left alone');
  t.equal(await releaseExpiredAalLeases(db.sql), 0);

  await db.sql`update aal_event set lease_until = now() - interval '1 second' where id = ${live.aalEventId}`;
  t.same(await worker(db, client(aal)).run(), { posted: 2, retried: 0, failed: 0, released: 0, paused: false });
  t.match(await aalEvent(db.sql, live.aalEventId), { state: 'posted', attempts: 2 });
});

t.test('logs name the event and the email, never the veteran', async (t) => {
  const db = await testDatabase(t);
  const aal = await sandbox(t);
  const correlationIds = ['31415926', '27182818', '16180339'];
  const detail = 'Tracking #: 1Z999AA10123456784 RX #: ...9043';
  const { run, logs } = worker(db, client(aal));
  await insertDeliveredEmail(db.sql, { correlationId: correlationIds[0]!, detailValue: detail });
  t.match(await run(), { posted: 1 });
  await insertDeliveredEmail(db.sql, { correlationId: correlationIds[1]!, detailValue: detail });
  const refused = await insertDeliveredEmail(db.sql, { correlationId: correlationIds[2]!, detailValue: detail });
  aal.state.failRate = 1;
  t.match(await run(), { retried: 2 });
  aal.state.failRate = 0;
  aal.state.forceStatus = { status: 400, message: `user ${correlationIds[2]} is not enrolled` };
  await backoffElapses(db.sql);
  t.match(await run(), { failed: 2 });
  t.ok(logs.lines.length > 0);
  for (const id of correlationIds) t.notMatch(logs.text, id, 'no correlation id in the logs');
  t.notMatch(logs.text, '1Z999AA10123456784', 'no detail value in the logs');
  t.match(logs.text, /"aalEventId":\d+/);
  t.match(logs.text, new RegExp(`"emailId":"${UuidText}"`));
  t.equal(
    (await aalEvent(db.sql, refused.aalEventId)).last_error,
    'AAL answered 400: user [userProfileId] is not enrolled',
    'an echoed id is not stored either',
  );
});

t.test('a claim taken over after its lease ran out cannot record over the newer one', async (t) => {
  const db = await testDatabase(t);
  await insertDeliveredEmail(db.sql, { correlationId: '1301' });
  const [stale] = await claimAalEvents(db.sql, 10, 60);
  await db.sql`update aal_event set lease_until = now() - interval '1 second'`;
  const [current] = await claimAalEvents(db.sql, 10, 60);
  t.equal(current!.attempts, stale!.attempts + 1);
  t.equal(await recordAalEventPosted(db.sql, stale!), false, 'the old claim records nothing');
  t.equal(await recordAalEventFailed(db.sql, stale!, 'late'), false);
  t.equal(await releaseAalEvents(db.sql, [stale!]), 0);
  t.equal(await recordAalEventPosted(db.sql, current!), true);
  t.match(await aalEvent(db.sql, current!.id), { state: 'posted', attempts: 2, last_error: null });
});
