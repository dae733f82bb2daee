// A JSON body that does not parse is answered with where it stops being JSON, never with its text:
// the body may hold a veteran's name or identifiers, which must not come back in the answer or be
// copied into inbound_message.error.
import t from 'tap';
import fc from 'fast-check';
import { testApp } from '../support/app.ts';
import { parseJsonBody } from '../../src/ingest/json.ts';
import { postDispenses } from '../support/ingest.ts';

t.test('a parse error says where (line, column, character), not what', async (t) => {
  const { app, db } = await testApp(t);
  const cases: [string, RegExp][] = [
    ['{"patient": {"name": "CMOPTEST ALPHA"}, oops}', /line 1, column 41 \(character 41\)/],
    ['CMOPTEST ALPHA 1012345678V123456', /line 1, column 1 \(character 1\)/],
    ['[\n  {"trackingNumber": "1Z9999990312345678"},\n  ,CMOPTEST\n]', /line 3, column 3 \(character 49\)/],
    ['{"name": "CMOPTEST', /ends before the JSON does \(line 1, column 19, character 19\)/],
    ['{"name": "CMOPTEST"} CMOPTEST', /line 1, column 22 \(character 22\)/],
  ];
  for (const [body, where] of cases) {
    const response = await postDispenses(app, body, 'application/json');
    t.equal(response.statusCode, 400);
    const message = response.json().errors[0].message as string;
    t.match(message, /^the body is not valid JSON/);
    t.match(message, where, body);
    t.notOk(/CMOPTEST|1012345678V123456|1Z999/.test(message), 'nothing of the body is quoted');
  }
  const errors = await db.sql<{ error: string }[]>`select error from inbound_message order by id`;
  t.equal(errors.length, cases.length, 'every body kept');
  for (const { error } of errors) t.notOk(/CMOPTEST|1012345678V123456|1Z999/.test(error), 'nor in inbound_message.error');
});

t.test('the position found is where JSON.parse stops, for any broken text', async (t) => {
  // Valid JSON with one character replaced or the text cut short: whatever JSON.parse refuses, the
  // error names a position within the body (or its end), and never the text.
  const broken = fc.tuple(fc.json(), fc.nat(), fc.constantFrom('x', ',', '}', ']', '"', ':', '\n', '\u0001')).map(([json, at, ch]) => {
    const i = at % (json.length + 1);
    return json.slice(0, i) + ch + json.slice(i + 1);
  });
  fc.assert(
    fc.property(broken, (body) => {
      let valid = true;
      let position: number | undefined;
      try {
        JSON.parse(body);
      } catch (error) {
        valid = false;
        const stated = /at position (\d+)/.exec((error as Error).message)?.[1];
        position = stated === undefined ? undefined : Number(stated);
      }
      const result = parseJsonBody(body);
      if (valid) return result.kind !== 'invalid' || !result.error.startsWith('the body is not valid JSON');
      if (result.kind !== 'invalid') return false;
      const character = Number(/character (\d+)\)/.exec(result.error)?.[1]);
      // Where V8 states a position, it is the same one.
      if (position !== undefined) return character === position + 1;
      return character >= 1 && character <= body.length + 1;
    }),
    { numRuns: 2000 },
  );
  t.pass('every broken body located');
});
