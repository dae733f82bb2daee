// Input a caller can get wrong is answered 400 naming the field, and no value it sent (an ICN, a
// tracking number, a path) is quoted back in the answer or written to the log.
import t from 'tap';
import { internalAuth, testApp } from '../support/app.ts';

const icn = '1012845631V123456';
const trackingNumber = '1Z9999990312345678';

t.test('a tampered list cursor is a 400 naming the cursor', async (t) => {
  const { app } = await testApp(t);
  for (const end of ['2026-13-45 99:99:99.000000+00', '2026-02-30 10:00:00.000000+00']) {
    const cursor = Buffer.from(JSON.stringify([end, '0f7a2c3d-1e2f-4a5b-8c9d-0e1f2a3b4c5d'])).toString('base64url');
    const response = await app.inject({ method: 'GET', url: `/v1/tracking-emails?cursor=${cursor}`, headers: internalAuth });
    t.equal(response.statusCode, 400, end);
    t.match(response.json().message, 'querystring/cursor');
  }
});

t.test('a shadow comparison up to 9999-12-31 is a 400 naming the bound', async (t) => {
  const { app } = await testApp(t);
  const response = await app.inject({
    method: 'POST',
    url: '/v1/shadow/compare?from=2026-05-01&to=9999-12-31',
    headers: { ...internalAuth, 'content-type': 'text/csv' },
    payload: `icn,tracking_number,carrier,sent_date\n${icn},${trackingNumber},UPS,2026-05-14\n`,
  });
  t.equal(response.statusCode, 400);
  t.match(response.json().message, /^to: must lie between the years 2000 and 2999/);
});

t.test('an export without its header is a 400 that quotes none of its first row', async (t) => {
  const { app, logs } = await testApp(t);
  const response = await app.inject({
    method: 'POST',
    url: '/v1/shadow/compare',
    headers: { ...internalAuth, 'content-type': 'text/csv' },
    payload: `${icn},${trackingNumber},UPS,2026-05-14\n${icn},1Z9999990312345679,UPS,2026-05-14\n`,
  });
  t.equal(response.statusCode, 400);
  t.match(
    response.json().message,
    /header: missing columns icn, tracking_number, carrier, sent_date; .* \(found 4 columns, none of them a known name\)/,
  );
  for (const value of [icn, trackingNumber, '1012845631']) {
    t.notMatch(response.body, value, 'not in the answer');
    t.notMatch(logs.text, value, 'not in the log');
  }
});

t.test('a path that matches no route is neither logged nor quoted back', async (t) => {
  const { app, logs } = await testApp(t);
  for (const headers of [{}, internalAuth]) {
    const response = await app.inject({ method: 'GET', url: `/v1/veterans/${icn}/emails?icn=${icn}`, headers });
    t.equal(response.statusCode, 404);
    t.notMatch(response.body, icn);
  }
  t.match(logs.text, /"route":"\(no route\)"/, 'the request is still logged');
  t.notMatch(logs.text, icn);
  t.notMatch(logs.text, '1012845631');
});
