// A body is bounded by what it holds, not only by its bytes: more messages, dispenses or segment
// lines than INGEST_MAX_RECORDS_PER_BODY allows (or JSON events) and it is kept and refused whole,
// naming the limit, before its records are built.
import t from 'tap';
import { testApp } from '../support/app.ts';
import { postDispenses, readAcks } from '../support/ingest.ts';

const message = (i: number) =>
  [
    `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|LIM-${i}|P|2.5`,
    'PID|||1012345678V123456^^^USVHA^NI',
    `RXD|1|00093718098^SIMVASTATIN^NDC|20260514|90|TAB||${100 + i}||||||1Z${i}`,
  ].join('\r');

t.test('a body over INGEST_MAX_RECORDS_PER_BODY is kept and answered 400 naming the limit', async (t) => {
  const { app, db } = await testApp(t, { INGEST_MAX_RECORDS_PER_BODY: '3' });
  t.equal((await postDispenses(app, [0, 1, 2].map(message).join('\r'), 'application/hl7-v2')).statusCode, 200, 'three messages: taken');

  const cases: [string, string, RegExp][] = [
    ['messages', [3, 4, 5, 6].map(message).join('\r'), /more than 3 messages/],
    ['dispenses', `${message(7)}\r${'RXD|1||||||9|||||||T\r'.repeat(4)}`, /more than 3 RXD segments/],
    ['segment lines', `${message(8)}\r${'NTE|1\r'.repeat(40)}`, /more than 30 segments/],
  ];
  for (const [name, body, reason] of cases) {
    const response = await postDispenses(app, body, 'application/hl7-v2');
    t.equal(response.statusCode, 400, name);
    const acks = readAcks(response.body);
    t.equal(acks.length, 1, `${name}: one AR for the body`);
    t.match(acks[0], { code: 'AR', text: reason }, name);
  }
  const events = JSON.stringify(Array.from({ length: 4 }, () => ({})));
  const json = await postDispenses(app, events, 'application/json');
  t.equal(json.statusCode, 400);
  t.match(json.json(), { received: 0, errors: [{ message: /more than 3 dispense events/ }] });
  const unread = await postDispenses(app, `[${'0,'.repeat(200)}0]`, 'application/json');
  t.match(
    unread.json(),
    { errors: [{ message: /more than 3 dispense events/ }] },
    'a body of more values than 3 events hold is refused unread',
  );

  const rows = await db.sql<{ outcome: string }[]>`select outcome from inbound_message order by id`;
  t.same(
    rows.map((r) => r.outcome),
    ['accepted', 'rejected', 'rejected', 'rejected', 'rejected', 'rejected'],
    'every body kept',
  );
  const [stored] = await db.sql<{ n: number }[]>`select count(*)::int as n from medication_dispense`;
  t.equal(stored!.n, 3, 'nothing of a refused body stored');
});
