// A request can be followed: its x-request-id (given or generated) comes back in the answer and is on
// every log line of the request and of the job run it triggers; requests are counted and timed per
// route pattern and status.
import t from 'tap';
import { UuidPattern } from '../../src/http/schemas.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';
import { internalAuth, testApp } from '../support/app.ts';

const uuid = new RegExp(UuidPattern);

t.test("the caller's x-request-id is answered and on every log line of the request and its job run", async (t) => {
  const { app, db, logs } = await testApp(t, { GROUPING_QUIET_MINUTES: '0' });
  await insertDispenses(db.sql, [{ rx_number: '2719551', tracking_number: '1Z999AA10123456784', patient_icn: icn(7) }]);
  const requestId = 'trace-4f1c2d.7';
  const response = await app.inject({ method: 'POST', url: '/v1/jobs/grouping', headers: { ...internalAuth, 'x-request-id': requestId } });
  t.equal(response.statusCode, 200);
  t.equal(response.json().emailsCreated, 1);
  t.equal(response.headers['x-request-id'], requestId);
  const lines = logs.lines.map((line) => JSON.parse(line) as { requestId?: string; msg: string });
  const mine = lines.filter((line) => line.requestId === requestId).map((line) => line.msg);
  t.ok(mine.includes('dispenses grouped into tracking emails'), "the job run's line carries the request id");
  t.ok(mine.includes('request completed'), "the request's own line carries it");
});

t.test('an id is generated when none, or an unusable one, is given; errors carry it too', async (t) => {
  const { app, logs } = await testApp(t);
  const none = await app.inject({ method: 'GET', url: '/v1/stats' });
  t.equal(none.statusCode, 401);
  t.match(none.headers['x-request-id'], uuid);
  const unusable = await app.inject({
    method: 'GET',
    url: '/v1/stats',
    headers: { ...internalAuth, 'x-request-id': 'two words\nand a line' },
  });
  t.equal(unusable.statusCode, 200);
  t.match(unusable.headers['x-request-id'], uuid);
  t.notMatch(logs.text, /and a line/, 'the unusable id is not logged');
  const unknown = await app.inject({ method: 'GET', url: '/no/such/route', headers: { 'x-request-id': 'abc-123' } });
  t.equal(unknown.statusCode, 404);
  t.equal(unknown.headers['x-request-id'], 'abc-123');
  const other = await app.inject({ method: 'GET', url: '/health/live' });
  t.not(other.headers['x-request-id'], none.headers['x-request-id'], 'each request gets its own');
});

t.test('HTTP requests are counted and timed per route pattern and status under rx_', async (t) => {
  const { app } = await testApp(t);
  const id = '7c9e6679-7425-40de-944b-e07fc1f63fbe';
  await app.inject({ method: 'GET', url: `/v1/tracking-emails/${id}`, headers: internalAuth });
  await app.inject({ method: 'GET', url: `/v1/tracking-emails/${id}`, headers: internalAuth });
  await app.inject({ method: 'GET', url: '/health/live' });
  await app.inject({ method: 'GET', url: '/nothing/here/123' });
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(metrics, /^rx_http_requests_total\{method="GET",route="\/v1\/tracking-emails\/:id",status_code="404"\} 2$/m);
  t.match(metrics, /^rx_http_requests_total\{method="GET",route="\/health\/live",status_code="200"\} 1$/m);
  t.match(metrics, /^rx_http_requests_total\{method="GET",route="unmatched",status_code="404"\} 1$/m);
  t.match(metrics, /^rx_http_request_duration_seconds_count\{method="GET",route="\/v1\/tracking-emails\/:id",status_code="404"\} 2$/m);
  t.match(metrics, /^rx_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/health\/live",status_code="200"\} \d+$/m);
  t.notMatch(metrics, new RegExp(id), 'no id from a URL becomes a label');
});
