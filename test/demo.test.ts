// npm run demo is a newcomer's first look: run as they would run it (a process of its own, starting
// the real service), it prints the account of delivered emails and AAL events and exits 0.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { UuidText } from '../src/http/schemas.ts';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

t.test('npm run demo prints dispenses, emails with packages, statuses, AAL events, a failure and a replay', async (t) => {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' };
  if (process.env.DATABASE_URL) env.DATABASE_URL = process.env.DATABASE_URL;
  const { stdout } = await run(process.execPath, ['scripts/demo.ts'], { cwd: root, env, timeout: 100_000 });
  t.notMatch(stdout, /\r/, 'no carriage return reaches the terminal');
  // HL7 answers one segment per line.
  t.match(stdout, /^ +MSH\|\^~\\&\|RX-TRACKING-EMAIL\|.*\|ACK\^R06\^ACK\|1-1\|P\|2\.3\.1$/m);
  t.match(stdout, /^ +MSA\|AA\|0124-7004512-1\|accepted$/m);
  t.match(stdout, /^ +MSA\|AE\|NOICN-1\|no ICN/m, 'the unprocessable sample is answered AE');
  t.match(stdout, /^ +text\/plain → 400$/m, 'the non-HL7 body is answered 400');
  t.match(stdout, /^ +MSA\|AR\|\|/m);
  t.match(stdout, /dispenses: cancelled 1, pending 9, unprocessable 1/);
  t.match(stdout, /9 dispenses grouped into 6 emails/);
  // Emails with their packages and statuses.
  t.match(stdout, /veteran …123456 +1 package\(s\), 2 prescription\(s\) +→ delivered/);
  t.match(stdout, /\| \*\*UPS\*\* tracking number: \[1Z9999990312345678\]/);
  t.match(stdout, /\| - Prescription ending in 9100/);
  t.match(stdout, /veteran …000001 .*→ permanent_failure \(Undeliverable - Preferences declined in VA Profile\)/, 'the failure');
  t.match(stdout, /sweep: replayed 1/, 'the replay');
  t.match(
    stdout,
    new RegExp(`veteran …000002 [^\\n]*\\n(?:[^\\n]*\\n)*? +send 2: notification ${UuidText}: temporary-failure`),
    'the replayed email was sent a second time',
  );
  t.match(stdout, /AAL event: posted at \d{4}-/);
  t.match(stdout, /emails: +delivered 4, permanent_failure 1, temporary_failure 1/);
  t.match(stdout, /AAL events: +posted 3, unpostable 1/);
  t.match(stdout, /^4 emails delivered, 3 AAL events posted\.$/m);
  t.notMatch(stdout, /\d{10}V\d{6}/, 'no full ICN is printed');
});
