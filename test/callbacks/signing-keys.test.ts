// Per-notification callbacks are signed with the key that sent the notification: after VA_NOTIFY_API_KEY
// is rotated, callbacks for what the replaced key sent must still be accepted; the sandbox's public
// key only while this process runs the sandbox.
import { createHmac, randomUUID } from 'node:crypto';
import t from 'tap';
import { buildApp } from '../../src/app.ts';
import { pythonUrlencode } from '../../src/callbacks/signature.ts';
import { testConfig } from '../../src/config.ts';
import { connect } from '../../src/db/connect.ts';
import { SandboxDefaults } from '../../src/sandbox/va-notify.ts';
import { testApp } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { insertNotification } from '../support/fixtures.ts';
import { callbackBody, insertEmail, notificationRow } from '../support/status.ts';

const url = '/v1/va-notify/callbacks';

function signed(body: unknown, secret: string) {
  const text = JSON.stringify(body);
  const signature = createHmac('sha256', secret).update(pythonUrlencode(text)).digest('hex');
  return { method: 'POST' as const, url, headers: { 'content-type': 'application/json', 'x-enp-signature': signature }, payload: text };
}

const currentSecret = '0b8c2d4e-6f70-4a12-b3c4-d5e6f7a8b9c0';
const previousSecret = '9f1e2d3c-4b5a-4697-8877-665544332211';
const serviceId = 'c2f3a4b5-6d7e-4f80-9a1b-2c3d4e5f6a7b';

t.test('a callback signed by a previous API key is accepted; one signed by an unknown key is not', async (t) => {
  const { app, db } = await testApp(t, {
    VA_NOTIFY_API_KEY: `rx-tracking-${serviceId}-${currentSecret}`,
    // A combined key and a bare secret: both forms are accepted, as for VA_NOTIFY_API_KEY.
    VA_NOTIFY_PREVIOUS_API_KEYS: `rx-tracking-old-${serviceId}-${previousSecret}`,
  });
  const signedBy = async (secret: string) => {
    const id = await insertNotification(db.sql, await insertEmail(db.sql));
    const response = await app.inject(signed(callbackBody(id), secret));
    return { status: response.statusCode, recorded: (await notificationRow(db.sql, id)).status };
  };
  t.same(await signedBy(currentSecret), { status: 200, recorded: 'delivered' }, 'the current key');
  t.same(await signedBy(previousSecret), { status: 200, recorded: 'delivered' }, 'the previous key');
  t.same(await signedBy('5a5a5a5a-0000-4000-8000-000000000000'), { status: 401, recorded: 'created' }, 'a key never configured');
});

t.test("the sandbox's public key: accepted while this process runs the sandbox, refused in shadow mode without it", async (t) => {
  const sandboxSigned = signed(callbackBody(randomUUID()), SandboxDefaults.secret);
  const withSandbox = await testApp(t);
  t.equal((await withSandbox.app.inject(sandboxSigned)).statusCode, 200, 'the sandbox VA Notify signs with it');

  // Production's shadow run: no VA Notify settings, and no sandbox VA Notify started.
  const { url: databaseUrl } = await testDatabase(t);
  const sql = connect(databaseUrl, { max: 2 });
  const app = await buildApp({ config: testConfig({ DELIVERY_MODE: 'shadow' }), sql, sandboxUrls: { aal: 'http://127.0.0.1:9' } });
  t.teardown(async () => {
    await app.close();
    await sql.end();
  });
  t.equal((await app.inject(sandboxSigned)).statusCode, 401);
  const [events] = await sql`select count(*)::int as n from notification_status_event`;
  t.equal(events!.n, 0, 'nothing stored');
});

t.test('the callbacks metric labels a status it does not know as unrecognised', async (t) => {
  const { app } = await testApp(t);
  const token = { authorization: 'Bearer test-callback-token-0001', 'content-type': 'application/json' };
  for (const status of ['made-up-1', 'made-up-2', 'technical-failure']) {
    const response = await app.inject({
      method: 'POST',
      url,
      headers: token,
      payload: JSON.stringify(callbackBody(randomUUID(), { status })),
    });
    t.equal(response.statusCode, 200, status);
  }
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.notMatch(metrics, /made-up/);
  t.match(metrics, /rx_callbacks_total\{outcome="pending_notification",status="unrecognised"\} 2/);
  t.match(
    metrics,
    /rx_callbacks_total\{outcome="pending_notification",status="permanent-failure"\} 1/,
    'a legacy status under its name today',
  );
});
