// The service never stores an SSN and never logs an ICN, a name, an SSN or a full Rx number.
import t from 'tap';
import { testApp, type TestApp } from '../support/app.ts';
import { postDispenses, postSample, readAcks, readSample, sampleIcns, samples, sampleSsns } from '../support/ingest.ts';

/** Every row of every table in the database, each as one line of text. */
async function dumpDatabase(sql: TestApp['db']['sql']): Promise<string> {
  const tables = await sql<{ schema: string; name: string }[]>`
    select table_schema as schema, table_name as name from information_schema.tables
    where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')`;
  const lines: string[] = [];
  for (const table of tables) {
    const rows = await sql<{ line: string }[]>`select t::text as line from ${sql(table.schema)}.${sql(table.name)} t`;
    lines.push(...rows.map((r) => `${table.name}: ${r.line}`));
  }
  return lines.join('\n');
}

t.test('no SSN from the samples is stored anywhere', async (t) => {
  const { app, db } = await testApp(t);
  for (const sample of samples) await postSample(app, sample);

  const dump = await dumpDatabase(db.sql);
  t.match(dump, /inbound_message: /, 'the dump covers the stored bodies');
  t.match(dump, /medication_dispense: /, 'and the dispenses');
  for (const ssn of sampleSsns) {
    t.ok(
      readSample('rds-r06-batch.hl7').includes(ssn) || readSample('rds-o13-one-package-two-rx.hl7').includes(ssn),
      `the samples carry ${ssn}`,
    );
    t.notOk(dump.includes(ssn), `SSN ${ssn} is in no table`);
  }
  t.match(
    dump,
    /1098765432V654321\^\^\^USVHA\^NI~XXXXXXXXX\^4\^M11~20987654\^\^\^200MHS\^PI/,
    'R06: the untyped SSN repetition is masked, ICN and MHV id kept',
  );
  t.match(dump, /1000000123V456789~~~USVHA~NI\^XXXXXXXXX~~~USSSA~SS\^7172676~~~USVHA~PI/, 'VistA encoding: masked with its own delimiters');
});

t.test('SSNs in PID-19, in other PID-3 repetitions and in ddd-dd-dddd form anywhere are masked', async (t) => {
  const { app, db } = await testApp(t);
  const message = [
    'MSH|^~\\&|CMOP|CMOP-LEAVENWORTH|MHV|MHV|20260514160512||RDS^O13|SSN-1|P|2.5',
    'PID|||1012345678V123456^^^USVHA^NI~666112222^^^USSSA^SS~123456^^^USDOD^EDIPI~7172676^^^USVHA^PI||CMOPTEST^ALPHA||19500101|M|||||||||||666113333',
    'NTE|1||veteran said SSN is 666-11-4444',
    'ORC|RE|521-2719043-1',
    'RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||2719043||||||1Z9999990312345678',
  ].join('\r');
  const response = await postDispenses(app, message, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  const json = await postDispenses(
    app,
    JSON.stringify({ stationNumber: '521', ssn: '666115555', note: 'ssn 666-11-6666' }),
    'application/json',
  );
  t.equal(json.statusCode, 400);

  const dump = await dumpDatabase(db.sql);
  for (const ssn of ['666112222', '666113333', '666-11-4444', '666114444', '666115555', '666-11-6666']) {
    t.notOk(dump.includes(ssn), `${ssn} is in no table`);
  }
  const [stored] = await db.sql<{ body: string }[]>`select body from inbound_message order by id limit 1`;
  t.match(stored?.body, /~7172676\^\^\^USVHA\^PI\|\|CMOPTEST/, 'the DFN is kept');
  t.match(stored?.body, /XXXXXXXXX\^\^\^USDOD\^EDIPI/, 'any other identifier is masked');
  t.match(
    stored?.body,
    /\|XXXXXXXXX\rNTE\|1\|\|veteran said SSN is XXX-XX-XXXX\r/,
    'PID-19 and the free-text SSN are masked, the rest as received',
  );
});

t.test('ingest logs carry no ICN, name, SSN or full Rx number', async (t) => {
  const { app, logs } = await testApp(t, { LOG_LEVEL: 'trace' });
  for (const sample of samples) await postSample(app, sample);
  await postDispenses(app, JSON.stringify([{ stationNumber: '521', patient: { icn: '1099999999V999999' } }]), 'application/json');

  t.match(logs.text, /dispense body ingested/, 'the ingest was logged');
  t.match(logs.text, /"inboundMessageId":\d+/, 'with the inbound message id');
  const secrets = [
    ...sampleIcns,
    '1099999999V999999',
    ...sampleSsns,
    'CMOPTEST',
    'ALPHA',
    'BRAVO',
    'CHARLIE',
    'DELTA',
    'ECHO',
    '7004512',
    '7004520',
    '7004513',
    '2719043',
    '2719100',
    '3100451',
    '3100452',
  ];
  for (const secret of secrets) t.notOk(logs.text.includes(secret), `${secret} is not in the logs`);
});

t.test('under a header whose encoding characters cannot be read, no SSN is stored', async (t) => {
  const { app, db } = await testApp(t);
  const bodies = [
    // Three encoding characters: the PID's delimiters are VistA's, the header's cannot be known.
    'MSH|~^&|PSO|521|MHV|MHV|20260514||RRD~O14|BAD-1|P|2.4\rPID|||1000000123V456789~~~USVHA~NI^666001234~~~USSSA~SS\rRXD|1|X~Y~L|20260514||||200||||||94001',
    // `#` as the field separator, and three encoding characters.
    'MSH#^~\\#CMOP#521#MHV#MHV#20260514##RDS^O13#BAD-2#P#2.5\rPID###666001234^^^USSSA^SS\rRXD#1#X^Y^L#20260514####201######94002',
    // MSH-1 left out: `^` reads as the field separator, so PID fields cut at it would miss the SSN.
    'MSH^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|BAD-3|P|2.5\rPID|||666009876^^^USSSA^SS||||||||||||||||666004321',
    // A readable header after a bad one: masked by its own encoding again, the DFN kept.
    'MSH|^~\\&&|CMOP|521\rPID|||666001234^^^USSSA^SS\r' +
      'MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|GOOD-1|P|2.5\rPID|||1012345678V123456^^^USVHA^NI~666009876^^^USSSA^SS~7172676^^^USVHA^PI\r' +
      'ORC|RE|521-202-1\rRXD|1|X^Y^L|20260514|1|||202||||||94003',
  ];
  for (const body of bodies) {
    const response = await postDispenses(app, body, 'application/hl7-v2');
    t.ok(response.statusCode === 200 || response.statusCode === 400, `answered (${response.statusCode})`);
  }
  const stored = await db.sql<{ body: string }[]>`select body from inbound_message order by id`;
  t.equal(stored.length, bodies.length, 'every body is kept');
  const dump = await dumpDatabase(db.sql);
  for (const ssn of sampleSsns) t.notOk(dump.includes(ssn), `SSN ${ssn} is in no table`);
  t.equal(
    stored[0]?.body,
    bodies[0]!.replace('1000000123V456789', 'XXXXXXXXXV456789').replace('^666001234~', '^XXXXXXXXX~'),
    'every run of nine or more digits in the PID is masked, the rest as received',
  );
  t.match(stored[1]?.body, /\rPID###XXXXXXXXX\^\^\^USSSA\^SS\r/, 'with `#` as the field separator too');
  t.match(stored[2]?.body, /\rPID\|\|\|XXXXXXXXX\^\^\^USSSA\^SS\|{16}XXXXXXXXX$/);
  t.match(
    stored[3]?.body,
    /1012345678V123456\^\^\^USVHA\^NI~XXXXXXXXX\^\^\^USSSA\^SS~7172676\^\^\^USVHA\^PI\r/,
    'the readable message is masked as usual',
  );
  const [dispense] = await db.sql`select patient_icn, state from medication_dispense`;
  t.same(dispense, { patient_icn: '1012345678V123456', state: 'pending' }, 'and its dispense is stored');
});

t.test("MLLP frames back to back without a CR after FS: each PID masked with its own message's delimiters", async (t) => {
  const { app, db } = await testApp(t);
  const first = [
    'MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|F-1|P|2.5',
    'PID|||1012345678V123456^^^USVHA^NI',
    'ORC|RE|521-400-1',
    'RXD|1|00093718098^SIMVASTATIN^NDC|20260514|90|||400||||||1Z400',
    'ZR2|UPS|1Z400|400',
  ].join('\r');
  const second = [
    'MSH|~^\\&|PSO|521|MHV|MHV|20260514160512||RRD~O14|F-2|P|2.4',
    'PID|||1000000123V456789~~~USVHA~NI^666001234~~~USSSA~SS',
    'ORC|OR|401',
    'RXD|1|D1~DIGOXIN~L|20260514||||401||||||9400100000000000000401',
  ].join('\r');
  // A frame of its own holding only a PID (in VistA's delimiters): under no header, so masked by its digits.
  const stray = 'PID|||1000000123V456789~~~USVHA~NI^666009876~~~USSSA~SS';
  const response = await postDispenses(app, `\x0b${first}\x1c\x0b${second}\x1c\x0b${stray}\x1c\r`, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.code, a.controlId]),
    [
      ['AA', 'F-1'],
      ['AA', 'F-2'],
    ],
    'one ACK per message',
  );
  const rows = await db.sql<
    { rx_number: string; patient_icn: string }[]
  >`select rx_number, patient_icn from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.patient_icn]),
    [
      ['400', '1012345678V123456'],
      ['401', '1000000123V456789'],
    ],
    'each dispense under its own patient',
  );
  const dump = await dumpDatabase(db.sql);
  for (const ssn of sampleSsns) t.notOk(dump.includes(ssn), `SSN ${ssn} is in no table`);
  t.match(
    dump,
    /1000000123V456789~~~USVHA~NI\^XXXXXXXXX~~~USSSA~SS\rORC/,
    'the second message masked with its own delimiters, its ICN kept',
  );
});
