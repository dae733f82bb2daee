// Refused callbacks are counted: a token VA Notify was never given, or a key rotated without
// VA_NOTIFY_PREVIOUS_API_KEYS, shows only as a stream of 401s (ops/alerts.yml pages on it).
import t from 'tap';
import { callbackToken, testApp } from '../support/app.ts';

t.test('unauthorized and invalid callbacks are counted by outcome', async (t) => {
  const { app } = await testApp(t);
  const body = JSON.stringify({ id: '7c9e6679-7425-40de-944b-e07fc1f63fbe', status: 'delivered' });
  const post = (headers: Record<string, string>, payload = body) =>
    app.inject({ method: 'POST', url: '/v1/va-notify/callbacks', headers: { 'content-type': 'application/json', ...headers }, payload });
  t.equal((await post({ authorization: 'Bearer not-the-callback-token' })).statusCode, 401);
  t.equal((await post({})).statusCode, 401);
  t.equal((await post({ authorization: `Bearer ${callbackToken}` }, '{"id": 1}')).statusCode, 400);
  t.equal((await post({ authorization: `Bearer ${callbackToken}` })).statusCode, 200);
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(metrics, /^rx_callbacks_total\{outcome="unauthorized",status="none"\} 2$/m);
  t.match(metrics, /^rx_callbacks_total\{outcome="invalid",status="none"\} 1$/m);
  t.match(metrics, /^rx_callbacks_total\{outcome="pending_notification",status="delivered"\} 1$/m);
});
