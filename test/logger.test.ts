// The log redaction: every key that could hold a veteran's identity or a secret is censored wherever
// it sits, in a line's object, a child logger's bindings and an error's fields, and nothing else
// changes. Checked against pino's own path-based redaction, which the service used before.
import fc from 'fast-check';
import pino from 'pino';
import { Writable } from 'node:stream';
import t from 'tap';
import { createLogger, SensitiveKeys } from '../src/logger.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, stream };
}

/** Only what a line says, not when or where it was written. */
function content(line: Record<string, unknown> | undefined) {
  const { time: _time, pid: _pid, hostname: _hostname, ...rest } = line ?? {};
  return rest;
}

t.test('sensitive keys are censored at any depth, in objects, arrays and bindings', async (t) => {
  const { lines, stream } = capture();
  const log = createLogger('info', stream).child({ job: 'send', icn: '1012345678V123456' });
  log.info(
    {
      notificationId: 'a-uuid',
      patientIcn: '1012345678V123456',
      dispense: { veteranIcn: '1012345678V123456', state: 'pending' },
      email: { to: 'veteran@example.com', subject: 'kept' },
      rows: [{ rx_number: '2719551', state: 'grouped' }],
      deep: { a: { b: { c: { d: { ssn: '666112222', kept: true } } } } },
      response: { headers: { authorization: 'Bearer secret', 'x-api-key': 'key' } },
    },
    'a line',
  );
  const line = content(lines[0]);
  t.same(line, {
    level: 30,
    job: 'send',
    icn: '[redacted]',
    notificationId: 'a-uuid',
    patientIcn: '[redacted]',
    dispense: { veteranIcn: '[redacted]', state: 'pending' },
    email: '[redacted]',
    rows: [{ rx_number: '[redacted]', state: 'grouped' }],
    deep: { a: { b: { c: { d: { ssn: '[redacted]', kept: true } } } } },
    response: { headers: { authorization: '[redacted]', 'x-api-key': '[redacted]' } },
    msg: 'a line',
  });
  t.notMatch(JSON.stringify(lines), /1012345678V123456|veteran@|2719551|666112222|Bearer/);
});

t.test("an error's own fields are censored; its message and type are kept", async (t) => {
  const { lines, stream } = capture();
  const error = Object.assign(new Error('VA Notify answered 400'), {
    status: 400,
    recipient_identifier: { id_value: '1012345678V123456' },
  });
  createLogger('info', stream).error({ err: error }, 'send failed');
  const err = lines[0]!.err as Record<string, unknown>;
  t.equal(err.message, 'VA Notify answered 400');
  t.equal(err.type, 'Error');
  t.equal(err.status, 400);
  t.equal(err.recipient_identifier, '[redacted]');
});

t.test("a Postgres error's detail, which quotes the row or key it is about, is censored", async (t) => {
  const { lines, stream } = capture();
  const error = Object.assign(new Error('duplicate key value violates unique constraint "medication_dispense_event_key"'), {
    code: '23505',
    detail: 'Key (station_number, rx_number, fill_number, tracking_number)=(521, 2719043, 1, 1Z9999990312345678) already exists.',
    constraint_name: 'medication_dispense_event_key',
  });
  createLogger('info', stream).error({ err: error }, 'insert failed');
  const err = lines[0]!.err as Record<string, unknown>;
  t.match(err, { code: '23505', detail: '[redacted]', constraint_name: 'medication_dispense_event_key' });
  t.notMatch(JSON.stringify(lines), /2719043/);
});

t.test('the logged object itself is left as it was', async (t) => {
  const { stream } = capture();
  const details = { patientIcn: '1012345678V123456', nested: { to: 'veteran@example.com' } };
  createLogger('info', stream).info(details, 'line');
  t.same(details, { patientIcn: '1012345678V123456', nested: { to: 'veteran@example.com' } });
});

t.test('to three levels deep, the same lines as pino redacting every key by path', async (t) => {
  // The path list the service used with pino's redact option.
  const paths = SensitiveKeys.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]);
  const key = fc.oneof(fc.constantFrom(...SensitiveKeys), fc.constantFrom('status', 'id', 'count', 'reason', 'source'));
  const leaf = fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.boolean(), fc.constant(null));
  const level2 = fc.dictionary(key, leaf, { maxKeys: 4 });
  const level1 = fc.dictionary(key, fc.oneof(leaf, level2), { maxKeys: 4 });
  const object = fc.dictionary(key, fc.oneof(leaf, level1), { maxKeys: 5 });
  fc.assert(
    fc.property(object, (details) => {
      const ours = capture();
      const theirs = capture();
      createLogger('info', ours.stream).info(details, 'line');
      pino({ level: 'info', redact: { paths, censor: '[redacted]' } }, theirs.stream).info(details, 'line');
      t.same(content(ours.lines[0]), content(theirs.lines[0]));
      return true;
    }),
    { numRuns: 300 },
  );
});
