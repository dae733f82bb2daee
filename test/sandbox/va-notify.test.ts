// The sandbox VA Notify against the contract: what a caller sends, what it gets back, and the
// callbacks that reach a real HTTP receiver.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import t from 'tap';
import { createLogger } from '../../src/logger.ts';
import { enpSignature, pythonUrlencode, verifyEnpSignature } from '../../src/callbacks/signature.ts';
import {
  PreferencesDeclinedReason,
  RetryableReason,
  sandboxOutcomeFor,
  SandboxRecipientEmail,
  startSandboxVaNotify,
  type SandboxVaNotifyOptions,
} from '../../src/sandbox/va-notify.ts';
import { LogCapture } from '../support/app.ts';
import { icn, personalisation, secret, serviceId, templateId } from '../support/va-notify.ts';

const callbackToken = 'callback-token-for-tests';

type Teardown = { teardown(fn: () => unknown): void };

async function sandbox(t: Teardown, options: SandboxVaNotifyOptions = {}) {
  const logs = new LogCapture();
  const va = await startSandboxVaNotify({
    serviceId,
    secret,
    templateId,
    callbackToken,
    callbackDelayMs: 0,
    callbackRetryDelayMs: 1,
    log: createLogger('info', logs),
    ...options,
  });
  t.teardown(() => va.close());
  return Object.assign(va, { logs });
}

interface Received {
  headers: IncomingHttpHeaders;
  text: string;
  body: Record<string, unknown>;
}

/** A callback receiver: records each request and answers the status `respond` picks. */
async function receiver(t: Teardown, respond: (index: number) => number = () => 204) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      received.push({ headers: req.headers, text, body: JSON.parse(text) });
      res.writeHead(respond(received.length - 1)).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`, received };
}

function token(options: { iss?: string; iatOffset?: number; key?: string } = {}): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(options.iss ?? serviceId)
    .setIssuedAt(Math.floor(Date.now() / 1000) + (options.iatOffset ?? 0))
    .sign(new TextEncoder().encode(options.key ?? secret));
}

/** A notification as the sandbox answers a send or a GET by id: the fields these tests read. */
interface NotificationAnswer {
  id: string;
  status: string;
  created_at: string;
  content: unknown;
}

/** GET /v2/notifications?reference=…: one page of notifications. */
interface NotificationPage {
  notifications: { id: string }[];
  links: { next: string };
}

async function call<T = NotificationAnswer>(url: string, init: { method?: string; body?: unknown; auth?: string | null } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const auth = init.auth === undefined ? `Bearer ${await token()}` : init.auth;
  if (auth !== null) headers.authorization = auth;
  const response = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers,
    body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
  });
  return { status: response.status, body: (await response.json()) as T };
}

const emailRequest = (overrides: Record<string, unknown> = {}) => ({
  template_id: templateId,
  recipient_identifier: { id_type: 'ICN', id_value: icn },
  personalisation,
  reference: 'email-1',
  ...overrides,
});

t.test('authentication follows VA Notify: 401 without a bearer token, 403 for a bad one', async (t) => {
  const va = await sandbox(t);
  const send = (auth: string | null) => call(`${va.url}/v2/notifications/email`, { body: emailRequest(), auth });
  const authError = (status: number, message: string) => ({ status_code: status, errors: [{ error: 'AuthError', message }] });

  t.same(await send(null), { status: 401, body: authError(401, 'Unauthorized: authentication token must be provided') });
  t.same(await send(`Basic ${Buffer.from('a:b').toString('base64')}`), {
    status: 401,
    body: authError(401, 'Unauthorized: authentication bearer scheme must be used'),
  });
  const clock = authError(403, 'Error: Your system clock must be accurate to within 30 seconds');
  t.same(await send(`Bearer ${await token({ iatOffset: -40 })}`), { status: 403, body: clock }, 'a token 40 s old');
  t.same(await send(`Bearer ${await token({ iatOffset: 40 })}`), { status: 403, body: clock }, 'a token 40 s in the future');
  t.same(await send(`Bearer ${await token({ key: 'another-secret-another-secret-00' })}`), {
    status: 403,
    body: authError(403, 'Invalid token: signature, api token not found'),
  });
  t.same(await send(`Bearer ${await token({ iss: '11111111-2222-4333-8444-555555555555' })}`), {
    status: 403,
    body: authError(403, 'Invalid token: service not found'),
  });
  t.same(await send('Bearer not-a-jwt'), { status: 403, body: authError(403, 'Invalid token: signature, api token not found') });
  t.equal((await send(`Bearer ${await token({ iatOffset: -20 })}`)).status, 201, 'a token 20 s old is still fine');
  t.same(va.state.counters.sendsRejected, { 401: 2, 403: 5 });
  t.equal(va.state.counters.sendsAccepted, 1);

  const get = await call(`${va.url}/v2/notifications/${'0'.repeat(8)}-0000-4000-8000-000000000000`, { auth: null });
  t.equal(get.status, 401, 'reads need a token too');
});

t.test('the email request schema: no other properties, the right template, every placeholder', async (t) => {
  const va = await sandbox(t);
  const send = (body: unknown) => call(`${va.url}/v2/notifications/email`, { body });
  const error = (kind: string, ...messages: string[]) => ({
    status: 400,
    body: { status_code: 400, errors: messages.map((message) => ({ error: kind, message })) },
  });

  t.same(
    await send(emailRequest({ email_reply_to_id: 'x' })),
    error('ValidationError', 'Additional properties are not allowed (email_reply_to_id was unexpected)'),
  );
  t.same(
    await send(emailRequest({ callback_headers: {}, extra: 1 })),
    error('ValidationError', 'Additional properties are not allowed (callback_headers, extra were unexpected)'),
  );
  const { template_id: _, ...withoutTemplate } = emailRequest();
  t.same(await send(withoutTemplate), error('ValidationError', 'template_id is a required property'));
  const { recipient_identifier: __, ...withoutRecipient } = emailRequest();
  t.same(await send(withoutRecipient), error('ValidationError', 'Please provide either a recipient_identifier or an email_address'));
  const wrongType = await send(emailRequest({ recipient_identifier: { id_type: 'SSN', id_value: icn } }));
  t.same(wrongType, error('ValidationError', 'recipient_identifier id_type is not one of [VAPROFILEID, PID, ICN, BIRLSID, EDIPI]'));
  t.same(
    await send(emailRequest({ callback_url: 'http://example.com/callbacks' })),
    error('ValidationError', 'callback_url is not a valid https url'),
  );
  t.same(await send(emailRequest({ billing_code: 'x'.repeat(257) })), error('ValidationError', 'billing_code is too long'));
  t.same(await send('{"template_id": '), error('BadRequestError', 'Invalid JSON supplied in POST data'));
  t.same(await send(emailRequest({ template_id: '00000000-0000-4000-8000-000000000000' })), error('BadRequestError', 'Template not found'));
  t.same(
    await send(emailRequest({ personalisation: { tracking_info: 'x', package_count: '1' } })),
    error('BadRequestError', 'Missing personalisation: prescription_count, shipped_date'),
  );
  t.same(
    await send(emailRequest({ scheduled_for: '2026-06-01 10:00' })),
    error('BadRequestError', 'Cannot schedule notifications (this feature is invite-only)'),
  );
  t.equal(va.state.notifications.size, 0, 'nothing invalid is stored');
  t.same(va.state.counters.sendsRejected, { 400: 11 });
});

t.test('an accepted email: the 201 body, the stored request, GET by id and by reference', async (t) => {
  const va = await sandbox(t, { callbackDelayMs: 60_000 });
  const request = emailRequest({ billing_code: 'RX', reference: 'email-7' });
  const sent = await call(`${va.url}/v2/notifications/email`, { body: request });
  t.equal(sent.status, 201);
  const id = sent.body.id;
  t.same(sent.body, {
    id,
    reference: 'email-7',
    uri: `${va.url}/v2/notifications/${id}`,
    template: { id: templateId, version: 1, uri: `${va.url}/services/${serviceId}/templates/${templateId}` },
    billing_code: 'RX',
    scheduled_for: null,
    callback_url: null,
    content: sent.body.content,
  });
  t.notMatch(JSON.stringify(sent.body.content), /Package 1/, 'personalisation is redacted in the answer');
  const stored = va.state.notifications.get(id)!;
  t.same(stored.request, request, 'the request body is kept as received');
  t.same(Object.keys(stored.token.claims).sort(), ['iat', 'iss']);

  const got = await call(`${va.url}/v2/notifications/${id}`);
  t.equal(got.status, 200);
  t.match(got.body, {
    id,
    reference: 'email-7',
    status: 'created',
    status_reason: null,
    sent_at: null,
    completed_at: null,
    email_address: null,
    type: 'email',
    billing_code: 'RX',
    recipient_identifiers: [{ id_type: 'ICN', id_value: icn }],
  });
  t.match(got.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

  const unknown = await call(`${va.url}/v2/notifications/3f5a2b1c-0000-4000-8000-000000000000`);
  t.same(unknown, { status: 404, body: { status_code: 404, errors: [{ error: 'NoResultFound', message: 'No result found' }] } });
  t.equal((await call(`${va.url}/v2/notifications/not-a-uuid`)).status, 400);

  await call(`${va.url}/v2/notifications/email`, { body: emailRequest({ reference: 'email-8' }) });
  const listed = await call<NotificationPage>(`${va.url}/v2/notifications?reference=email-7`);
  t.equal(listed.status, 200);
  t.same(
    listed.body.notifications.map((n) => n.id),
    [id],
  );
  t.equal(listed.body.links.next, `${va.url}/v2/notifications?reference=email-7&older_than=${id}`);
  const after = await call<NotificationPage>(listed.body.links.next);
  t.same(after.body.notifications, [], 'the page after the last is empty');
  t.equal((await call(`${va.url}/v2/notifications?reference=email-7&colour=red`)).status, 400);
  t.same({ byId: va.state.counters.getsById, byReference: va.state.counters.getsByReference }, { byId: 3, byReference: 3 });
});

t.test('simulated recipients get a 201 and nothing is stored', async (t) => {
  const va = await sandbox(t);
  const { recipient_identifier: _, ...rest } = emailRequest();
  const sent = await call(`${va.url}/v2/notifications/email`, {
    body: { ...rest, email_address: 'simulate-delivered-2@notifications.va.gov' },
  });
  t.equal(sent.status, 201);
  t.equal(va.state.notifications.size, 0);
});

t.test('the per-minute limit answers 429, and refused requests count too', async (t) => {
  const va = await sandbox(t, { rateLimitPerMinute: 2, callbackDelayMs: 60_000 });
  const send = () => call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  t.equal((await send()).status, 201);
  t.equal((await send()).status, 201);
  const limited = await send();
  t.same(limited, {
    status: 429,
    body: {
      status_code: 429,
      errors: [{ error: 'RateLimitError', message: 'Exceeded rate limit for key type LIVE of 2 requests per 60 seconds' }],
    },
  });
  t.equal((await send()).status, 429);
  t.equal((await call(`${va.url}/v2/notifications?reference=email-1`)).status, 200, 'reads are not limited');
  t.same(va.state.counters.sendsRejected, { 429: 2 });
});

t.test('service-level callbacks carry the bearer token and the contract body, nulls included', async (t) => {
  const hook = await receiver(t);
  const va = await sandbox(t, { callbackUrl: hook.url, callbackStatuses: 'all' });
  const sent = await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();

  t.same(
    hook.received.map((r) => r.body.status),
    ['sending', 'delivered'],
  );
  for (const { headers } of hook.received) {
    t.equal(headers.authorization, `Bearer ${callbackToken}`);
    t.equal(headers['content-type'], 'application/json');
    t.notOk(headers['x-enp-signature']);
  }
  const [sending, delivered] = hook.received.map((r) => r.body);
  const stored = va.state.notifications.get(sent.body.id)!;
  t.same(Object.keys(delivered!), [
    'id',
    'reference',
    'to',
    'status',
    'created_at',
    'completed_at',
    'sent_at',
    'notification_type',
    'status_reason',
    'provider',
  ]);
  t.same(delivered, {
    id: sent.body.id,
    reference: 'email-1',
    to: SandboxRecipientEmail,
    status: 'delivered',
    created_at: stored.createdAt,
    completed_at: stored.completedAt,
    sent_at: stored.sentAt,
    notification_type: 'email',
    status_reason: null,
    provider: 'ses',
  });
  t.equal(sending!.completed_at, null, 'a sending callback has no completed_at');
  t.match(delivered!.completed_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  t.ok(String(delivered!.completed_at) > String(delivered!.sent_at));

  const got = await call(`${va.url}/v2/notifications/${sent.body.id}`);
  t.match(got.body, { status: 'delivered', email_address: SandboxRecipientEmail, sent_by: 'ses', completed_at: stored.completedAt });
  t.equal(va.state.counters.callbacksPosted, 2);
});

t.test('by default only completed statuses are called back; none without a callback URL', async (t) => {
  const hook = await receiver(t);
  const va = await sandbox(t);
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.equal(va.state.counters.callbacksPosted, 0, 'no service callback registered yet');
  va.setCallbackUrl(hook.url);
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.same(
    hook.received.map((r) => r.body.status),
    ['delivered'],
  );
});

t.test('a per-notification callback_url gets every status, signed with the API key secret', async (t) => {
  const hook = await receiver(t);
  const service = await receiver(t);
  const va = await sandbox(t, { callbackUrl: service.url });
  const sent = await call(`${va.url}/v2/notifications/email`, { body: emailRequest({ callback_url: hook.url }) });
  await va.whenIdle();

  t.equal(service.received.length, 0, 'the service-level callback is not used');
  t.same(
    hook.received.map((r) => r.body.status),
    ['sending', 'delivered'],
  );
  for (const { headers, body, text } of hook.received) {
    t.notOk(headers.authorization, 'no Authorization header');
    t.equal(body.provider_payload, null);
    t.equal(Object.keys(body).at(-1), 'provider_payload');
    t.equal(body.id, sent.body.id);
    const parsed = JSON.parse(text) as Record<string, unknown>;
    t.equal(headers['x-enp-signature'], enpSignature(parsed, secret));
    t.ok(verifyEnpSignature(JSON.stringify(parsed), String(headers['x-enp-signature']), [secret]));
    t.notOk(
      verifyEnpSignature(JSON.stringify({ ...parsed, status: 'permanent-failure' }), String(headers['x-enp-signature']), [secret]),
      'a changed body fails',
    );
  }
});

t.test('outcomes are deterministic by ICN, visible to GET and to callbacks', async (t) => {
  t.same(sandboxOutcomeFor('1012345678V000001'), { status: 'permanent-failure', statusReason: PreferencesDeclinedReason });
  t.same(sandboxOutcomeFor('1012345678V000002'), { status: 'temporary-failure', statusReason: RetryableReason });
  t.same(sandboxOutcomeFor('1012345678V000003'), { status: 'sending', statusReason: null });
  t.same(sandboxOutcomeFor(icn), { status: 'delivered', statusReason: null });

  const hook = await receiver(t);
  const va = await sandbox(t, { callbackUrl: hook.url });
  const ids: Record<string, string> = {};
  for (const suffix of ['000001', '000002', '000003', '123456']) {
    const sent = await call(`${va.url}/v2/notifications/email`, {
      body: emailRequest({ reference: `ref-${suffix}`, recipient_identifier: { id_type: 'ICN', id_value: `1012345678V${suffix}` } }),
    });
    ids[suffix] = sent.body.id;
  }
  await va.whenIdle();
  const byReference = Object.fromEntries(hook.received.map((r) => [r.body.reference, [r.body.status, r.body.status_reason]]));
  t.same(
    byReference,
    {
      'ref-000001': ['permanent-failure', PreferencesDeclinedReason],
      'ref-000002': ['temporary-failure', RetryableReason],
      'ref-123456': ['delivered', null],
    },
    'the one that stays sending is not called back (only completed statuses are)',
  );
  for (const [suffix, status] of [
    ['000001', 'permanent-failure'],
    ['000002', 'temporary-failure'],
    ['000003', 'sending'],
    ['123456', 'delivered'],
  ]) {
    const got = await call(`${va.url}/v2/notifications/${ids[suffix!]}`);
    t.equal(got.body.status, status, `GET shows ${status}`);
  }
  t.equal(va.state.notifications.get(ids['000003']!)!.completedAt, null);
});

t.test('fault knobs: dropped, duplicated and reordered callbacks', async (t) => {
  const hook = await receiver(t);
  const va = await sandbox(t, { callbackUrl: hook.url });

  va.state.faults.dropCallbackRate = 1;
  const dropped = await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.equal(hook.received.length, 0);
  t.equal(va.state.counters.callbacksDropped, 1);
  t.equal((await call(`${va.url}/v2/notifications/${dropped.body.id}`)).body.status, 'delivered', 'the status moved anyway');

  va.state.faults.dropCallbackRate = 0;
  va.state.faults.duplicateCallbackRate = 1;
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.equal(hook.received.length, 2);
  t.equal(hook.received[0]!.text, hook.received[1]!.text, 'the same callback twice');

  va.state.faults.duplicateCallbackRate = 0;
  va.state.faults.reorderCallbacks = true;
  hook.received.length = 0;
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.same(
    hook.received.map((r) => r.body.status),
    ['delivered', 'sending'],
    'a stale sending after the final status',
  );
  t.same(va.state.callbacks.map((c) => c.stale).slice(-2), [false, true]);
});

t.test('callbacks are retried on 5xx and connection errors, never on other 4xx', async (t) => {
  const flaky = await receiver(t, (index) => (index < 2 ? 503 : 200));
  const va = await sandbox(t, { callbackUrl: flaky.url });
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.equal(flaky.received.length, 3, 'two 503s, then accepted');
  t.same(
    va.state.callbacks.map((c) => c.responseStatus),
    [503, 503, 200],
  );

  const refusing = await receiver(t, () => 401);
  va.setCallbackUrl(refusing.url);
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.equal(refusing.received.length, 1, 'a 401 is dropped, not retried');
  t.equal(va.state.counters.callbacksFailed, 1);

  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  va.setCallbackUrl(`http://127.0.0.1:${port}/callbacks`);
  const before = va.state.callbacks.length;
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  const attempts = va.state.callbacks.slice(before);
  t.equal(attempts.length, 5, 'every attempt made on a connection error');
  t.ok(attempts.every((a) => a.error === 'connection error'));
  t.equal(va.state.counters.callbacksFailed, 2);
});

t.test('sendFailureRate answers 503 with the 500-shape body; the log has no ICN or address', async (t) => {
  const hook = await receiver(t);
  const va = await sandbox(t, { callbackUrl: hook.url });
  va.state.faults.sendFailureRate = 1;
  t.same(await call(`${va.url}/v2/notifications/email`, { body: emailRequest() }), {
    status: 503,
    body: { result: 'error', message: 'Internal server error' },
  });
  va.state.faults.sendFailureRate = 0;
  await call(`${va.url}/v2/notifications/email`, { body: emailRequest() });
  await va.whenIdle();
  t.match(va.logs.text, /sandbox VA Notify: no real email is sent/);
  t.notMatch(va.logs.text, icn);
  t.notMatch(va.logs.text, SandboxRecipientEmail);
});

t.test('enpSignature matches what Python computes for the same body', async (t) => {
  // Computed with Python 3: hmac.new(b'secret-key', urllib.parse.urlencode(body).encode(), hashlib.sha256).hexdigest()
  const body = {
    id: '3f5a2b1c-0000-4000-8000-000000000001',
    reference: 'email 42/ü&x=y',
    to: 'veteran+rx@example.com',
    status: 'delivered',
    created_at: '2026-05-14T13:22:08.123456Z',
    completed_at: null,
    sent_at: '2026-05-14T13:22:09.000001Z',
    notification_type: 'email',
    status_reason: "Undeliverable - it's (gone)! *~",
    provider: 'ses',
    provider_payload: null,
    flag: true,
    nested: { a: [1, null, false], b: 'q"x' },
  };
  t.equal(
    pythonUrlencode(body),
    'id=3f5a2b1c-0000-4000-8000-000000000001&reference=email+42%2F%C3%BC%26x%3Dy&to=veteran%2Brx%40example.com&status=delivered' +
      '&created_at=2026-05-14T13%3A22%3A08.123456Z&completed_at=None&sent_at=2026-05-14T13%3A22%3A09.000001Z&notification_type=email' +
      '&status_reason=Undeliverable+-+it%27s+%28gone%29%21+%2A~&provider=ses&provider_payload=None&flag=True' +
      '&nested=%7B%27a%27%3A+%5B1%2C+None%2C+False%5D%2C+%27b%27%3A+%27q%22x%27%7D',
  );
  t.equal(enpSignature(body, 'secret-key'), 'd957b9debb54f7bfbb054ec7a4f0e715eb5eaaafc803f4e51ea197d28926e89f');
});
