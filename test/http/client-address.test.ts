// The client address that rate limits are kept by: the one the last trusted proxy saw, never one a
// client writes into X-Forwarded-For itself.
import t from 'tap';
import { internalAuth, testApp } from '../support/app.ts';

const stats = (forwardedFor: string, remoteAddress = '10.0.3.17') => ({
  method: 'GET' as const,
  url: '/v1/stats',
  headers: { ...internalAuth, 'x-forwarded-for': forwardedFor },
  remoteAddress,
});

t.test('behind a trusted proxy, a client cannot leave its rate limit by inventing addresses', async (t) => {
  // The load balancer (10.0.3.17, a private address) appends the address it saw: 198.51.100.7.
  const { app } = await testApp(t, { RATE_LIMIT_PER_MINUTE: '2', TRUST_PROXY: '10.0.3.0/24' });
  const codes = [];
  for (const invented of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
    codes.push((await app.inject(stats(`${invented}, 198.51.100.7`))).statusCode);
  }
  t.same(codes, [200, 200, 429]);
  t.equal((await app.inject(stats('198.51.100.8'))).statusCode, 200, 'another client has its own limit');
});

t.test('with no trusted proxy, X-Forwarded-For is ignored', async (t) => {
  const { app } = await testApp(t, { RATE_LIMIT_PER_MINUTE: '2', TRUST_PROXY: 'none' });
  const codes = [];
  for (const claimed of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) codes.push((await app.inject(stats(claimed))).statusCode);
  t.same(codes, [200, 200, 429]);
});

t.test('by default no proxy is trusted: a client on a private address cannot choose its rate-limit key', async (t) => {
  // A client inside the VPC (10.0.9.4), with no load balancer between: each request claims a new address.
  const { app } = await testApp(t, { RATE_LIMIT_PER_MINUTE: '2', TRUST_PROXY: undefined });
  const codes = [];
  for (const claimed of ['198.51.100.1', '198.51.100.2', '198.51.100.3'])
    codes.push((await app.inject(stats(claimed, '10.0.9.4'))).statusCode);
  t.same(codes, [200, 200, 429]);
});
