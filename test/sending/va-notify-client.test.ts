// The VA Notify client against the sandbox VA Notify: what it sends, and how every kind of answer
// (and non-answer) is classified.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { testConfig } from '../../src/config.ts';
import { SandboxDefaults, startSandboxVaNotify, type SandboxVaNotifyOptions } from '../../src/sandbox/va-notify.ts';
import {
  classifyOutcome,
  createVaNotifyClient,
  isRetryable,
  vaNotifyClientFromConfig,
  type VaNotifyClientOptions,
  type VaNotifyOperation,
} from '../../src/sending/va-notify-client.ts';
import { icn, personalisation, secret, serviceId, templateId } from '../support/va-notify.ts';

const email = (reference = 'email-1') => ({ icn, reference, personalisation });

type Teardown = { teardown(fn: () => unknown): void };

async function setup(t: Teardown, sandboxOptions: SandboxVaNotifyOptions = {}, clientOptions: Partial<VaNotifyClientOptions> = {}) {
  const va = await startSandboxVaNotify({ serviceId, secret, templateId, callbackDelayMs: 60_000, ...sandboxOptions });
  t.teardown(() => va.close());
  const requests: Array<[VaNotifyOperation, string]> = [];
  const client = createVaNotifyClient({
    baseUrl: va.url,
    serviceId,
    secret,
    templateId,
    timeoutMs: 5_000,
    onRequest: (operation, outcome) => requests.push([operation, outcome]),
    ...clientOptions,
  });
  return { va, client, requests };
}

t.test('an accepted send carries exactly the allowed properties and a fresh token', async (t) => {
  const { va, client, requests } = await setup(t);
  const outcome = await client.sendEmail(email());
  t.equal(outcome.kind, 'accepted');
  if (outcome.kind !== 'accepted') return;
  t.equal(outcome.status, 201);
  const stored = va.state.notifications.get(outcome.notificationId)!;
  t.ok(stored, 'the notification id is the one VA Notify stored');
  t.same(stored.request, {
    template_id: templateId,
    recipient_identifier: { id_type: 'ICN', id_value: icn },
    personalisation,
    reference: 'email-1',
  });
  t.same(Object.keys(stored.request), ['template_id', 'recipient_identifier', 'personalisation', 'reference']);
  t.same(stored.token.header, { alg: 'HS256', typ: 'JWT' });
  t.same(Object.keys(stored.token.claims).sort(), ['iat', 'iss']);
  t.equal(stored.token.claims.iss, serviceId);
  t.same(requests, [['send', 'accepted']]);
  t.notOk(isRetryable(outcome));
});

t.test('billing_code and callback_url are sent only when configured', async (t) => {
  const { va, client } = await setup(
    t,
    {},
    { billingCode: 'RX-TRACKING', callbackUrl: 'https://rx.example.va.gov/v1/va-notify/callbacks' },
  );
  const outcome = await client.sendEmail(email());
  t.equal(outcome.kind, 'accepted');
  const stored = [...va.state.notifications.values()][0]!;
  t.same(Object.keys(stored.request), [
    'template_id',
    'recipient_identifier',
    'personalisation',
    'reference',
    'billing_code',
    'callback_url',
  ]);
  t.equal(stored.request.billing_code, 'RX-TRACKING');
  t.equal(stored.request.callback_url, 'https://rx.example.va.gov/v1/va-notify/callbacks');
});

t.test('from configuration: a combined {name}-{service_id}-{secret} key works', async (t) => {
  const va = await startSandboxVaNotify({ serviceId, secret, templateId, callbackDelayMs: 60_000 });
  t.teardown(() => va.close());
  const config = testConfig({
    VA_NOTIFY_BASE_URL: va.url,
    VA_NOTIFY_API_KEY: `rx-tracking-${serviceId}-${secret}`,
    VA_NOTIFY_TEMPLATE_ID: templateId,
    VA_NOTIFY_CALLBACK_TOKENS: 'callback-token-for-tests',
  });
  const outcome = await vaNotifyClientFromConfig(config, va.url).sendEmail(email());
  t.equal(outcome.kind, 'accepted');
  t.equal([...va.state.notifications.values()][0]!.token.claims.iss, serviceId);

  const separate = testConfig({
    VA_NOTIFY_BASE_URL: va.url,
    VA_NOTIFY_SERVICE_ID: serviceId,
    VA_NOTIFY_API_KEY: secret,
    VA_NOTIFY_TEMPLATE_ID: templateId,
    VA_NOTIFY_CALLBACK_TOKENS: 'callback-token-for-tests',
  });
  t.equal(
    (await vaNotifyClientFromConfig(separate, va.url).sendEmail(email())).kind,
    'accepted',
    'so does a bare secret with the service id',
  );
});

t.test('from configuration in sandbox mode: the sandbox credentials fill in', async (t) => {
  const va = await startSandboxVaNotify({ callbackDelayMs: 60_000 });
  t.teardown(() => va.close());
  const config = testConfig();
  t.throws(() => vaNotifyClientFromConfig(config, va.url), /service id is missing/);
  const client = vaNotifyClientFromConfig(config, va.url, SandboxDefaults);
  t.equal((await client.sendEmail(email())).kind, 'accepted');
});

t.test('classification of every answer VA Notify gives', async (t) => {
  const { va, client } = await setup(t);
  va.state.forcedResponses.push(
    { status: 400, message: 'Missing personalisation: tracking_info' },
    { status: 401 },
    { status: 403, message: 'Invalid token: API key expired' },
    { status: 429 },
    { status: 500 },
    { status: 503 },
  );
  const outcomes = [];
  for (let i = 0; i < 6; i++) outcomes.push(await client.sendEmail(email()));
  t.same(outcomes, [
    { kind: 'rejected', status: 400, message: 'Missing personalisation: tracking_info' },
    { kind: 'unauthorized', status: 401, message: 'Unauthorized: authentication token must be provided' },
    { kind: 'unauthorized', status: 403, message: 'Invalid token: API key expired' },
    { kind: 'rate_limited', status: 429, message: 'Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds', daily: false },
    { kind: 'transient', status: 500, reason: 'HTTP 500: Internal server error' },
    { kind: 'transient', status: 503, reason: 'HTTP 503: Internal server error' },
  ]);
  t.same(outcomes.map(isRetryable), [false, false, false, true, true, true]);
  t.equal(va.state.notifications.size, 0);

  const notFound = await client.getNotification('3f5a2b1c-0000-4000-8000-000000000000');
  t.same(notFound, { kind: 'not_found', status: 404, message: 'No result found' });
  t.notOk(isRetryable(notFound));
});

t.test("VA Notify's own 400s keep its message", async (t) => {
  const { client } = await setup(t, {
    requiredPersonalisation: ['tracking_info', 'package_count', 'prescription_count', 'shipped_date', 'facility_name'],
  });
  t.same(await client.sendEmail(email()), { kind: 'rejected', status: 400, message: 'Missing personalisation: facility_name' });
  const wrongTemplate = createVaNotifyClient({
    baseUrl: (await setup(t)).va.url,
    serviceId,
    secret,
    templateId: '00000000-0000-4000-8000-000000000000',
    timeoutMs: 5_000,
  });
  t.same(await wrongTemplate.sendEmail(email()), { kind: 'rejected', status: 400, message: 'Template not found' });
});

t.test('a token from the wrong secret is unauthorized, never retried', async (t) => {
  const { va } = await setup(t);
  const client = createVaNotifyClient({
    baseUrl: va.url,
    serviceId,
    secret: 'a-rotated-away-secret-0000000000',
    templateId,
    timeoutMs: 5_000,
  });
  const outcome = await client.sendEmail(email());
  t.same(outcome, { kind: 'unauthorized', status: 403, message: 'Invalid token: signature, api token not found' });
  t.notOk(isRetryable(outcome));
});

t.test('no answer: a hang times out, a slow answer times out, a closed port fails to connect; all transient', async (t) => {
  const { va, client, requests } = await setup(t, {}, { timeoutMs: 300 });
  va.state.forcedResponses.push({ hang: true });
  const hung = await client.sendEmail(email());
  t.same(hung, { kind: 'transient', reason: 'timeout after 300 ms' });
  t.ok(isRetryable(hung));
  t.equal(va.state.counters.sendsHung, 1);

  va.state.faults.latencyMs = 2_000;
  t.same(await client.getNotification('3f5a2b1c-0000-4000-8000-000000000000'), { kind: 'transient', reason: 'timeout after 300 ms' });
  va.state.faults.latencyMs = 0;
  t.same(requests, [
    ['send', 'transient'],
    ['get', 'transient'],
  ]);

  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const nobody = createVaNotifyClient({ baseUrl: `http://127.0.0.1:${port}`, serviceId, secret, templateId, timeoutMs: 5_000 });
  const refused = await nobody.sendEmail(email());
  t.same(refused, { kind: 'transient', reason: 'connection error (ECONNREFUSED)' });
  t.ok(isRetryable(refused));
});

t.test('accepted, then the connection dropped: transient, and the reference finds the email', async (t) => {
  const { va, client } = await setup(t);
  va.state.forcedResponses.push({ acceptThenDrop: true });
  const lost = await client.sendEmail(email('email-42'));
  t.match(lost, { kind: 'transient', reason: /^connection error/ });
  t.equal(va.state.notifications.size, 1, 'VA Notify kept it');
  const found = await client.findByReference('email-42');
  t.equal(found.kind, 'accepted');
  if (found.kind !== 'accepted') return;
  t.equal(found.notificationId, [...va.state.notifications.keys()][0]);
  t.equal(found.body.length, 1);
});

t.test('GET by id and by reference, following the next links', async (t) => {
  const { va, client, requests } = await setup(t, { pageSize: 2 });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const sent = await client.sendEmail(email('email-7'));
    if (sent.kind === 'accepted') ids.push(sent.notificationId);
  }
  await client.sendEmail(email('email-8'));

  const got = await client.getNotification(ids[0]!);
  t.equal(got.kind, 'accepted');
  if (got.kind === 'accepted') t.match(got.body, { id: ids[0], reference: 'email-7', status: 'created' });

  const found = await client.findByReference('email-7');
  t.equal(found.kind, 'accepted');
  if (found.kind !== 'accepted') return;
  t.same(
    found.body.map((n) => n.id),
    [...ids].reverse(),
    'all three, newest first, across pages',
  );
  t.equal(found.notificationId, ids[2], 'the newest');
  t.equal(va.state.counters.getsByReference, 3, 'two pages of two and the empty page after');

  const none = await client.findByReference('email-unknown');
  t.same(none, { kind: 'accepted', status: 200, notificationId: null, body: [] });
  t.same(
    requests.filter(([op]) => op !== 'send'),
    [
      ['get', 'accepted'],
      ['list', 'accepted'],
      ['list', 'accepted'],
      ['list', 'accepted'],
      ['list', 'accepted'],
    ],
  );
});

t.test('over the per-minute limit: rate_limited, retryable', async (t) => {
  const { client } = await setup(t, { rateLimitPerMinute: 2 });
  t.equal((await client.sendEmail(email())).kind, 'accepted');
  t.equal((await client.sendEmail(email())).kind, 'accepted');
  const limited = await client.sendEmail(email());
  t.same(limited, {
    kind: 'rate_limited',
    status: 429,
    message: 'Exceeded rate limit for key type LIVE of 2 requests per 60 seconds',
    daily: false,
  });
  t.ok(isRetryable(limited));
});

t.test('classifyOutcome on answers the sandbox does not give', async (t) => {
  t.same(classifyOutcome('send', { status: 201, text: 'not json' }), {
    kind: 'transient',
    status: 201,
    reason: 'HTTP 201 with an unreadable body',
  });
  t.same(classifyOutcome('get', { status: 200, text: '{"id":"x"}' }), {
    kind: 'transient',
    status: 200,
    reason: 'HTTP 200 with an unreadable body',
  });
  t.same(classifyOutcome('send', { status: 502, text: '<html>Bad Gateway</html>' }), {
    kind: 'transient',
    status: 502,
    reason: 'HTTP 502',
  });
  t.same(classifyOutcome('send', { status: 413, text: '' }), { kind: 'rejected', status: 413, message: 'HTTP 413' });
  t.same(classifyOutcome('send', { status: 408, text: '' }), { kind: 'transient', status: 408, reason: 'HTTP 408' });
  t.same(classifyOutcome('send', { status: 302, text: '' }), { kind: 'transient', status: 302, reason: 'unexpected HTTP 302' });
  t.same(
    classifyOutcome('send', {
      status: 429,
      text: '{"status_code":429,"errors":[{"error":"TooManyRequestsError","message":"Exceeded send limits (1000) for today"}]}',
    }),
    {
      kind: 'rate_limited',
      status: 429,
      message: 'Exceeded send limits (1000) for today',
      daily: true,
    },
  );
  t.same(classifyOutcome('list', { status: 200, text: '{"notifications":[],"links":{}}' }), {
    kind: 'accepted',
    status: 200,
    notificationId: null,
    body: { notifications: [], links: {} },
  });
});
