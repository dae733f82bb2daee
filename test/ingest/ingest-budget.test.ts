// Ingest bounds the body bytes in work at once (INGEST_BYTES_IN_WORK), not the number of bodies:
// producers posting many small bodies at once are all served, while a large body that would pass the
// budget is answered 503 with Retry-After before it is read. Driven over real HTTP, since the budget
// is taken when a request's headers arrive, before its body.
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { loadConfig } from '../../src/config.ts';
import { internalAuth, testApp } from '../support/app.ts';
import { configError } from '../support/config-error.ts';

const message = (i: number) =>
  [
    `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|BUDGET-${i}|P|2.5`,
    'PID|||1012345678V123456^^^USVHA^NI',
    `RXD|1|00093718098^SIMVASTATIN^NDC|20260514|90|TAB||${500 + i}||||||1ZBUDGET${i}`,
  ].join('\r');

const post = (url: string, body: string) =>
  fetch(`${url}/v1/dispenses`, { method: 'POST', headers: { ...internalAuth, 'content-type': 'application/hl7-v2' }, body });

/** Starts a request whose body never finishes arriving: it holds its share of the budget until the socket closes. */
async function startUpload(url: string, contentLength: number): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(
    `POST /v1/dispenses HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: ${internalAuth.authorization}\r\n` +
      `Content-Type: application/hl7-v2\r\nContent-Length: ${contentLength}\r\n\r\nMSH|`,
  );
  return socket;
}

t.test('forty small bodies posted at once are all taken with the default budget', async (t) => {
  const { url } = await testApp(t, {}, { listen: true });
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => post(url!, message(i))));
  t.same(
    answers.map((a) => a.status).filter((s) => s !== 200),
    [],
    'every body answered 200',
  );
});

t.test('a large body beyond the budget is answered 503 unread, while small ones still pass', async (t) => {
  const mib = 1024 * 1024;
  const { url, db } = await testApp(t, { INGEST_BODY_LIMIT_BYTES: String(mib), INGEST_BYTES_IN_WORK: String(1.5 * mib) }, { listen: true });
  const held = await startUpload(url!, mib);
  t.teardown(() => held.destroy());
  // The held upload's headers are in: give the server the moment it needs to route it.
  for (let i = 0; i < 50; i++) {
    const probe = await post(url!, 'x'.repeat(600 * 1024));
    if (probe.status === 503) {
      t.ok(Number(probe.headers.get('retry-after')) > 0, '503 says when to retry');
      t.match(await probe.text(), /INGEST_BYTES_IN_WORK|body bytes in work/, 'the answer names the limit');
      break;
    }
    if (i === 49) t.fail(`a 600 KiB body beside a held 1 MiB one was never refused (last ${probe.status})`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const small = await post(url!, message(99));
  t.equal(small.status, 200, 'a small body fits beside the held one');

  held.destroy();
  // Once the held upload is gone its share is free again: the same large body is read (and refused as HL7).
  let status = 503;
  for (let i = 0; i < 50 && status === 503; i++) {
    status = (await post(url!, 'x'.repeat(600 * 1024))).status;
    if (status === 503) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.equal(status, 400, 'read once the budget is free');
  const [stored] = await db.sql<{ n: number }[]>`select count(*)::int as n from inbound_message where body like 'xxxx%'`;
  t.equal(stored!.n, 1, 'only the body that was read is stored');
});

t.test('a budget smaller than the largest body accepted is refused at start', async (t) => {
  t.match(
    configError(() => loadConfig({ INGEST_BODY_LIMIT_BYTES: '2097152', INGEST_BYTES_IN_WORK: '1048576' })),
    /INGEST_BYTES_IN_WORK: must be at least INGEST_BODY_LIMIT_BYTES/,
  );
});
