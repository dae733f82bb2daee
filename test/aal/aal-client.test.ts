// The AAL client against the sandbox AAL: what goes over the wire, how sessions are kept, and how
// every kind of answer is classified.
import t from 'tap';
import { classifyAalOutcome, httpDate } from '../../src/aal/aal-client.ts';
import { aalCredentials, client, sandbox } from '../support/aal.ts';

const completionTime = new Date('2026-05-14T13:22:41.250Z');
const activity = (correlationId: string, detailValue = 'Tracking #: 1Z999AA10123456784 RX #: ...9043') => ({
  correlationId,
  completionTime,
  detailValue,
});

t.test('posts one activity with the contract headers and camelCase body', async (t) => {
  const aal = await sandbox(t);
  const outcome = await client(aal).post(activity('15176497'));
  t.same(outcome, { kind: 'posted' });
  t.equal(aal.state.sessionsFor('15176497'), 1, 'a session was issued for the veteran (appToken, x-api-key, mhvCorrelationId)');
  t.equal(aal.state.events.length, 1);
  const [event] = aal.state.events;
  t.strictSame(event!.body, {
    userProfileId: 15176497,
    activityType: 'Rx Tracking Email',
    action: 'Rx Tracking Email Delivered',
    completionTime: 'Thu, 14 May 2026 13:22:41 GMT',
    performerType: 'System',
    detailValue: 'Tracking #: 1Z999AA10123456784 RX #: ...9043',
    status: 1,
  });
  t.equal(event!.headers.xApiKey, aalCredentials.apiKey);
  t.match(event!.headers.contentType, /^application\/json/);
  t.equal(event!.sessionCorrelationId, '15176497', 'the Token header is the session issued for this veteran');
  t.same(
    aal.state.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
    ['GET /v1/usermgmt/auth/session 200', 'POST /v1/usermgmt/activity 200'],
  );
});

t.test('the configured activity type, action and performer are sent', async (t) => {
  const aal = await sandbox(t);
  await client(aal, { activityType: 'RxTracking', action: 'Email delivered', performerType: 'Application' }).post(activity('42'));
  t.match(aal.state.events[0]!.body, { activityType: 'RxTracking', action: 'Email delivered', performerType: 'Application' });
});

t.test('a base URL with a path prefix and a trailing slash', async (t) => {
  const aal = await sandbox(t);
  t.same(await client(aal, { baseUrl: `${aal.url}/mhvapi/` }).post(activity('42')), { kind: 'posted' });
  t.equal(aal.state.requests[1]!.path, '/mhvapi/v1/usermgmt/activity');
});

t.test('one session per veteran, reused until shortly before it expires', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal);
  await aalClient.post(activity('1001'));
  await aalClient.post(activity('1001', 'second'));
  await Promise.all([aalClient.post(activity('1002')), aalClient.post(activity('1002', 'concurrent'))]);
  t.equal(aal.state.sessionsFor('1001'), 1, 'reused for the same veteran');
  t.equal(aal.state.sessionsFor('1002'), 1, 'concurrent posts for one veteran share one session request');
  t.equal(aal.state.sessionsIssued, 2);
  t.equal(aal.state.postsAccepted, 4);

  const shortLived = await sandbox(t, { sessionTtlSeconds: 20 });
  const renewing = client(shortLived, { sessionRenewBeforeMs: 30_000 });
  await renewing.post(activity('1003'));
  await renewing.post(activity('1003'));
  t.equal(shortLived.state.sessionsFor('1003'), 2, 'a session within 30 s of its expiry is not used');
});

t.test('the session cache is bounded', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal, { sessionCacheSize: 2 });
  for (const id of ['1', '2', '1', '3', '1', '2']) await aalClient.post(activity(id));
  t.equal(aalClient.cachedSessions, 2);
  // 1 and 2 cached; 1 touched; 3 evicts 2; 1 still cached; 2 needs a new session.
  t.same(
    ['1', '2', '3'].map((id) => aal.state.sessionsFor(id)),
    [1, 2, 1],
  );
});

t.test('a session refused mid-use is renewed once and the post succeeds', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal);
  await aalClient.post(activity('2001'));
  aal.state.expireAllSessions();
  t.same(await aalClient.post(activity('2001', 'after expiry')), { kind: 'posted' });
  t.same(
    aal.state.requests.map((r) => `${r.path} ${r.status}`),
    [
      '/v1/usermgmt/auth/session 200',
      '/v1/usermgmt/activity 200',
      '/v1/usermgmt/activity 401',
      '/v1/usermgmt/auth/session 200',
      '/v1/usermgmt/activity 200',
    ],
  );
  t.equal(aal.state.events.length, 2);
});

t.test('credentials refused on the session request (401) are unauthorized, and nothing is posted', async (t) => {
  const aal = await sandbox(t);
  const outcome = await client(aal, { appToken: 'wrong-app-token' }).post(activity('3001'));
  t.match(outcome, { kind: 'unauthorized', status: 401, reason: /session: AAL answered 401: invalid appToken/ });
  t.equal(aal.state.postsAccepted + aal.state.postsRejected, 0, 'no activity post without a session');
});

t.test('a 400 is permanent, with the AAL message as the reason, after one request', async (t) => {
  const aal = await sandbox(t);
  aal.state.forceStatus = { status: 400, message: 'detailValue is too long for user 3002' };
  const outcome = await client(aal).post(activity('3002'));
  t.same(outcome, { kind: 'permanent', status: 400, reason: 'AAL answered 400: detailValue is too long for user [userProfileId]' });
  t.equal(aal.state.postsRejected, 1);
});

t.test('a 403 on the post is unauthorized, after one request, and the session is kept', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal);
  aal.state.forceStatus = { status: 403, message: 'Invalid API key for user 3003' };
  t.same(await aalClient.post(activity('3003')), {
    kind: 'unauthorized',
    status: 403,
    reason: 'AAL answered 403: Invalid API key for user [userProfileId]',
  });
  t.same(
    aal.state.requests.map((r) => `${r.path} ${r.status}`),
    ['/v1/usermgmt/auth/session 200', '/v1/usermgmt/activity 403'],
    'no session renewal, no second post',
  );
  aal.state.forceStatus = undefined;
  t.same(await aalClient.post(activity('3003')), { kind: 'posted' });
  t.equal(aal.state.sessionsFor('3003'), 1);
});

t.test('a 403 on the session call is unauthorized and nothing is posted', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal);
  aal.state.forceSessionStatus = { status: 403, message: 'Forbidden' };
  t.same(await aalClient.post(activity('3004')), { kind: 'unauthorized', status: 403, reason: 'session: AAL answered 403: Forbidden' });
  t.equal(aal.state.postsAccepted + aal.state.postsRejected, 0, 'no activity post without a session');
  t.equal(aalClient.cachedSessions, 0, 'a refused session is not cached');
  aal.state.forceSessionStatus = undefined;
  t.same(await aalClient.post(activity('3004')), { kind: 'posted' }, 'the next post asks for a session again');
});

t.test('5xx, down, unreachable and timeouts are transient', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal, { timeoutMs: 200 });
  aal.state.failNext = 1;
  t.match(await aalClient.post(activity('4001')), { kind: 'transient', status: 500 });
  t.same(await aalClient.post(activity('4001')), { kind: 'posted' }, 'failNext answers only the next post');
  aal.state.down = true;
  t.match(await aalClient.post(activity('4002')), { kind: 'transient', status: 503, reason: /session: AAL answered 503/ });
  aal.state.down = false;
  aal.state.hang = true;
  t.match(await aalClient.post(activity('4003')), { kind: 'transient', reason: 'AAL request timed out' });
  aal.state.hang = false;
  await aal.close();
  t.match(await aalClient.post(activity('4004')), { kind: 'transient', reason: /^AAL unreachable: ECONNREFUSED/ });
});

t.test('an event that cannot be a valid post is permanent and never sent', async (t) => {
  const aal = await sandbox(t);
  const aalClient = client(aal);
  t.match(await aalClient.post(activity('MHV-123')), { kind: 'permanent', reason: /not a positive integer/ });
  t.match(await aalClient.post(activity('99999999999999999999')), { kind: 'permanent' });
  t.match(await aalClient.post({ ...activity('5001'), completionTime: new Date('nope') }), { kind: 'permanent' });
  t.equal(aal.state.requests.length, 0);
});

t.test('classification rule', async (t) => {
  const kind = (status: number, body = '') => classifyAalOutcome({ status, body }).kind;
  t.equal(kind(200), 'posted');
  t.equal(kind(201), 'posted');
  for (const status of [401, 408, 429, 500, 502, 503, 504]) t.equal(kind(status), 'transient', `${status}`);
  for (const status of [400, 404, 409, 413, 415, 422]) t.equal(kind(status), 'permanent', `${status}`);
  t.equal(kind(403), 'unauthorized', 'a gateway 403 is our credentials, not the event');
  t.same(classifyAalOutcome({ status: 403, body: '{"message":"Forbidden"}' }), {
    kind: 'unauthorized',
    status: 403,
    reason: 'AAL answered 403: Forbidden',
  });
  t.equal(classifyAalOutcome({ error: new TypeError('fetch failed', { cause: { code: 'ECONNRESET' } }) }).kind, 'transient');
  t.same(classifyAalOutcome({ status: 422, body: '{"developerMessage":"bad action"}' }), {
    kind: 'permanent',
    status: 422,
    reason: 'AAL answered 422: bad action',
  });
  t.same(classifyAalOutcome({ status: 400, body: 'plain\ntext' }), {
    kind: 'permanent',
    status: 400,
    reason: 'AAL answered 400: plain text',
  });
});

t.test('completion times are RFC 7231 HTTP dates', async (t) => {
  t.equal(httpDate(new Date('2026-01-05T03:04:05.999Z')), 'Mon, 05 Jan 2026 03:04:05 GMT');
});
