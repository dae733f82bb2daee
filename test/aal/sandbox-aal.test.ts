// The sandbox AAL holds callers to the contract: the service is only as correct as its stand-in.
import t from 'tap';
import { aalCredentials, sandbox } from '../support/aal.ts';

const validBody = {
  userProfileId: 15176497,
  activityType: 'Rx Tracking Email',
  action: 'Rx Tracking Email Delivered',
  completionTime: 'Thu, 14 May 2026 13:22:41 GMT',
  performerType: 'System',
  detailValue: 'Tracking #: 1Z999AA10123456784',
  status: 1,
};

async function openSession(url: string, headers: Record<string, string>) {
  return fetch(`${url}/v1/usermgmt/auth/session`, { headers });
}

/** The headers of a session the sandbox issues: the service's credentials, for one veteran. */
const sessionHeaders = { appToken: aalCredentials.appToken, 'x-api-key': aalCredentials.apiKey, mhvCorrelationId: '15176497' };

/** A session's token, as the AAL client opens one before posting. */
async function sessionToken(url: string): Promise<string> {
  return (await openSession(url, sessionHeaders)).headers.get('token')!;
}

async function postActivity(url: string, token: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}/v1/usermgmt/activity`, {
    method: 'POST',
    headers: { Token: token, 'x-api-key': aalCredentials.apiKey, 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as { message?: string } };
}

t.test('sessions are issued only to the right application, for a named veteran', async (t) => {
  const aal = await sandbox(t, { sessionTtlSeconds: 120 });
  const good = sessionHeaders;
  const issued = await openSession(aal.url, good);
  t.equal(issued.status, 200);
  t.match(issued.headers.get('token'), /^[\w-]{20,}$/);
  const expires = Date.parse(issued.headers.get('expires') ?? '');
  t.ok(expires > Date.now() + 60_000 && expires <= Date.now() + 120_000, 'expires is an HTTP date about the TTL ahead');

  t.equal((await openSession(aal.url, { ...good, appToken: 'nope' })).status, 401);
  t.equal((await openSession(aal.url, { ...good, 'x-api-key': 'nope' })).status, 401);
  const { mhvCorrelationId: _, ...anonymous } = good;
  const missing = await openSession(aal.url, anonymous);
  t.equal(missing.status, 400);
  t.match(await missing.json(), { message: /mhvCorrelationId/ });
  t.equal(aal.state.sessionsIssued, 1);
});

t.test('activity posts are held to the contract', async (t) => {
  const aal = await sandbox(t);
  const token = await sessionToken(aal.url);

  const cases: [string, unknown, number, RegExp][] = [
    ['unknown field', { ...validBody, userId: 1 }, 400, /unknown fields: userId/],
    ['missing field', { ...validBody, detailValue: undefined }, 400, /detailValue is required/],
    ['string userProfileId', { ...validBody, userProfileId: '15176497' }, 400, /userProfileId must be an integer/],
    ['fractional userProfileId', { ...validBody, userProfileId: 1.5 }, 400, /userProfileId must be an integer/],
    ['ISO completionTime', { ...validBody, completionTime: '2026-05-14T13:22:41Z' }, 400, /completionTime must be an HTTP date/],
    ['status out of range', { ...validBody, status: 2 }, 400, /status must be 0 or 1/],
    ['numeric action', { ...validBody, action: 7 }, 400, /action must be a string/],
    ['another veteran', { ...validBody, userProfileId: 1 }, 400, /not the session's user/],
    ['not JSON', '{', 400, /not valid JSON/],
    ['not an object', [validBody], 400, /JSON object/],
  ];
  for (const [name, body, status, message] of cases) {
    const answer = await postActivity(aal.url, token, body);
    t.equal(answer.status, status, name);
    t.match(answer.body.message, message, name);
  }
  t.equal((await postActivity(aal.url, token, validBody, { 'Content-Type': 'text/plain' })).status, 415);
  t.equal((await postActivity(aal.url, token, validBody, { 'x-api-key': 'wrong' })).status, 401);
  t.equal((await postActivity(aal.url, 'unknown-token', validBody)).status, 401);
  t.equal(aal.state.events.length, 0, 'nothing invalid is recorded');

  t.equal((await postActivity(aal.url, token, validBody)).status, 200);
  t.equal(aal.state.events.length, 1);
  t.equal(aal.state.postsAccepted, 1);
  t.equal(aal.state.postsRejected, cases.length + 3);

  aal.state.expireAllSessions();
  const expired = await postActivity(aal.url, token, validBody);
  t.same([expired.status, expired.body.message], [401, 'session expired']);
});

t.test('fault knobs', async (t) => {
  const aal = await sandbox(t);
  const token = await sessionToken(aal.url);
  aal.state.failNext = 2;
  t.equal((await postActivity(aal.url, token, validBody)).status, 500);
  t.equal((await postActivity(aal.url, token, validBody)).status, 500);
  t.equal((await postActivity(aal.url, token, validBody)).status, 200);
  aal.state.failRate = 1;
  t.equal((await postActivity(aal.url, token, validBody)).status, 500);
  aal.state.failRate = 0;
  aal.state.forceStatus = { status: 422, message: 'activity type not allowed' };
  t.same(await postActivity(aal.url, token, validBody), { status: 422, body: { errorCode: 422, message: 'activity type not allowed' } });
  aal.state.forceStatus = undefined;
  // A gateway refusal comes before any header is looked at, even good ones.
  aal.state.forceSessionStatus = { status: 403, message: 'Forbidden' };
  const refused = await openSession(aal.url, sessionHeaders);
  t.same([refused.status, refused.headers.get('token'), await refused.json()], [403, null, { errorCode: 403, message: 'Forbidden' }]);
  t.equal((await postActivity(aal.url, token, validBody)).status, 200, 'activity posts are not affected');
  aal.state.forceSessionStatus = undefined;
  t.equal((await openSession(aal.url, sessionHeaders)).status, 200);
  aal.state.down = true;
  t.equal((await postActivity(aal.url, token, validBody)).status, 503);
  t.equal((await openSession(aal.url, {})).status, 503);
  t.equal(aal.state.events.length, 2);
});
