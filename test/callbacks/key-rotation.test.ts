// Per-notification callbacks are signed with the key that sent the notification: after VA_NOTIFY_API_KEY
// is rotated, callbacks for what the replaced key sent must still be accepted.
import { createHmac } from 'node:crypto';
import t from 'tap';
import { pythonUrlencode } from '../../src/callbacks/signature.ts';
import { testApp } from '../helpers/app.ts';
import { callbackBody, insertEmail, insertNotification, notificationRow } from '../status/fixtures.ts';

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
    const body = JSON.stringify(callbackBody(id));
    const signature = createHmac('sha256', secret).update(pythonUrlencode(body)).digest('hex');
    const response = await app.inject({
      method: 'POST',
      url: '/v1/va-notify/callbacks',
      headers: { 'content-type': 'application/json', 'x-enp-signature': signature },
      payload: body,
    });
    return { status: response.statusCode, recorded: (await notificationRow(db.sql, id)).status };
  };
  t.same(await signedBy(currentSecret), { status: 200, recorded: 'delivered' }, 'the current key');
  t.same(await signedBy(previousSecret), { status: 200, recorded: 'delivered' }, 'the previous key');
  t.same(await signedBy('5a5a5a5a-0000-4000-8000-000000000000'), { status: 401, recorded: 'created' }, 'a key never configured');
});
