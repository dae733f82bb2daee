// The service process, started as `npm start` starts it (its heap caps included), survives any input
// load: 64 concurrent 5 MiB ingest bodies, half of them built to cost the most memory per byte, are
// answered (200, 400 or 503 with Retry-After), never by a dead process. No timing is asserted.
import t from 'tap';
import { testDatabase } from '../support/database.ts';
import { internalAuth } from '../support/app.ts';
import { startServiceProcess } from '../support/service-process.ts';
import { bodies } from '../support/overload-bodies.ts';

// 320 MiB uploaded and a process started on a shared machine: minutes, not the suite's two.
t.setTimeout(900_000);

t.test('64 concurrent 5 MiB bodies, half pathological: every one answered, the process alive', async (t) => {
  const { url: databaseUrl } = await testDatabase(t);
  const service = await startServiceProcess({ DATABASE_URL: databaseUrl, JOBS_ENABLED: 'false', LOG_LEVEL: 'warn' });
  t.teardown(() => service.child.kill('SIGKILL'));
  let died: string | undefined;
  void service.exited.then(({ code, signal }) => (died = `exited with ${code ?? signal}`));

  const post = (b: (typeof bodies)[number]) =>
    fetch(`${service.url}/v1/dispenses`, { method: 'POST', headers: { ...internalAuth, 'content-type': b.type }, body: b.body }).then(
      async (r) => ({ name: b.name, status: r.status, retryAfter: r.headers.get('retry-after'), text: (await r.text()).slice(0, 200) }),
      (error: Error) => ({ name: b.name, status: 0, retryAfter: null, text: String(error.cause ?? error) }),
    );
  // Half real bodies, half pathological, interleaved.
  const requests = Array.from({ length: 64 }, (_, i) => post(i % 2 === 0 ? bodies[0]! : bodies[1 + ((i >> 1) % (bodies.length - 1))]!));
  const answers = await Promise.all(requests);

  t.equal(died, undefined, 'the process did not die');
  t.same(
    answers.filter((a) => ![200, 400, 503].includes(a.status)),
    [],
    'every body answered 200, 400 or 503',
  );
  const overloaded = answers.filter((a) => a.status === 503);
  t.ok(overloaded.length > 0, `overload answered 503 (${overloaded.length} of 64)`);
  for (const a of overloaded) t.ok(Number(a.retryAfter) > 0, `${a.name}: 503 says when to retry`);
  const served = answers.filter((a) => a.status !== 503).map((a) => `${a.name}: ${a.status}`);
  t.ok(served.length > 0, `some bodies were taken: ${served.join(', ')}`);

  // Each pathological body, sent on its own, is answered too; and the service is still ready.
  for (const b of bodies.slice(1)) {
    const answer = await post(b);
    t.ok([200, 400].includes(answer.status), `${b.name} alone: ${answer.status} ${answer.text.replaceAll('\r', ' ')}`);
  }
  t.equal(died, undefined, 'the process did not die');
  t.equal((await fetch(`${service.url}/health/ready`)).status, 200, 'still ready');
});
