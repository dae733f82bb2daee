// What CMOP sends reaches a veteran's email only as plain text: VA Notify renders the email as
// markdown, so a carrier, tracking number, Rx number or drug name must not add a link, emphasis, a
// heading, a new line or a bare URL. And one email stays a body VA Notify accepts (1 MiB), however
// many packages a veteran has: it lists the first ones and says how many more.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { runGrouping } from '../../src/grouping/grouping-job.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { testDatabase } from '../support/database.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';

const log = createLogger('silent');
const group = (sql: Parameters<typeof runGrouping>[0]['sql'], env: Record<string, string> = {}) =>
  runGrouping({ sql, config: testConfig({ EMAIL_INCLUDE_DRUG_NAMES: 'true', ...env }), log });

/** One package as it may read: a bold carrier, its number (linked for a known carrier), its prescriptions. */
const heading = /^\*\*[^*\n]+\*\* tracking number: (not provided yet|\[[A-Za-z0-9]+\]\(https:\/\/[^\s()]+\)|[^\n]*)$/;
const prescription = /^- Prescription ending in [^\n]*$/;

/** The markdown of a value shown as text: nothing that would render as formatting or a link. */
function assertPlain(t: Test, text: string, what: string) {
  t.notMatch(text, /https?:|www\.|@|:\/\//i, `${what}: no URL or address`);
  t.notMatch(text, /(?<!\\)[*_`[\]<>|#~!]/, `${what}: no unescaped markdown character`);
}

t.test('hostile carrier, tracking number, Rx number and drug name render as plain text', async (t) => {
  const { sql } = await testDatabase(t);
  const hostile = [
    { carrier: '[Click here](https://evil.example/login)', tracking_number: '1Z1', rx_number: '1000001', drug_name: 'A' },
    { carrier: 'UPS', tracking_number: '**URGENT** visit https://evil.example', rx_number: '1000002', drug_name: 'B' },
    { carrier: 'EVIL\n# Your account is locked', tracking_number: 'T3\n\n[reset](http://x.example)', rx_number: '1000003', drug_name: 'C' },
    { carrier: 'www.evil.example', tracking_number: 'evil@example.com', rx_number: '12](http://x.example)', drug_name: 'D' },
    {
      carrier: 'FEDEX',
      tracking_number: '7712',
      rx_number: '1000005',
      drug_name: 'SIMVASTATIN 40MG TAB\r\n> call 555-0100 _now_ <a href="x">',
    },
    { carrier: 'DHL', tracking_number: 'T6', rx_number: '1000006', drug_name: 'DIGOXIN 0.25MG TAB (EQV-LANOXIN) 5%/ML, www.x.example' },
  ];
  await insertDispenses(
    sql,
    hostile.map((d) => ({ ...d, patient_icn: icn(1) })),
  );
  t.match(await group(sql), { emailsCreated: 1, dispensesGrouped: hostile.length });
  const [email] = await sql<{ personalisation: { tracking_info: string } }[]>`select personalisation from tracking_email`;
  const info = email!.personalisation.tracking_info;
  const blocks = info.split('\n\n');
  t.equal(blocks.length, hostile.length, 'one block per package, no extra paragraph');
  for (const block of blocks) {
    const [head, ...lines] = block.split('\n');
    t.match(head, heading, 'the heading keeps its shape');
    t.equal(lines.length, 1, 'one line per prescription, no line added');
    t.match(lines[0], prescription);
    const carrier = /^\*\*([^*]+)\*\*/.exec(head!)![1]!;
    assertPlain(t, carrier, 'carrier');
    const number = head!.replace(/^\*\*[^*]+\*\* tracking number: /, '');
    if (!number.startsWith('[')) assertPlain(t, number, 'tracking number');
    assertPlain(t, lines[0]!.replace(/^- /, ''), 'prescription line');
  }
  // What stays readable: the letters and digits, a drug's strength and punctuation.
  t.match(info, /- Prescription ending in 0005: SIMVASTATIN 40MG TAB call 555\\-0100 now a href x/);
  t.match(info, /DIGOXIN 0\.25MG TAB \\\(EQV\\-LANOXIN\\\) 5%\/ML, www x example/);
  t.match(info, /\*\*FedEx\*\* tracking number: \[7712\]\(https:\/\/www\.fedex\.com/);
});

t.test('any text from CMOP renders as plain text (generated)', async (t) => {
  const { sql } = await testDatabase(t);
  const piece = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom(
      '[',
      ']',
      '(',
      ')',
      '*',
      '_',
      '`',
      '#',
      '>',
      '<',
      '!',
      '|',
      '~',
      '\n',
      '\r',
      '\u2028',
      'http://',
      'https://a.b',
      'www.',
      '.com',
      '@',
      '::',
      '\\',
      '&amp;',
      '^',
    ),
  );
  const text = fc.array(piece, { maxLength: 8 }).map((parts) => parts.join('').replaceAll('\0', ''));
  const samples = fc.sample(fc.record({ carrier: text, tracking_number: text, rx_number: text, drug_name: text }), 45);
  await insertDispenses(
    sql,
    samples.map((s, i) => ({
      ...s,
      carrier: s.carrier.slice(0, 40),
      rx_number: `${i}:${s.rx_number}`.slice(0, 40),
      tracking_number: `${i}:${s.tracking_number}`.slice(0, 60),
      patient_icn: icn(2),
    })),
  );
  await group(sql);
  const [email] = await sql<{ personalisation: { tracking_info: string } }[]>`select personalisation from tracking_email`;
  const blocks = email!.personalisation.tracking_info.split('\n\n');
  t.equal(blocks.length, samples.length);
  for (const block of blocks) {
    const [head, ...lines] = block.split('\n');
    t.match(head, heading);
    t.same(
      lines.map((l) => prescription.test(l)),
      [true],
    );
    assertPlain(t, head!.replace(/^\*\*|\*\* tracking number: /g, ''), 'heading');
    // The Rx number's last four are letters and digits only; the drug name follows our own colon.
    const [, lastFour, drug] = /^- Prescription ending in ([^:]*)(?:: (.*))?$/.exec(lines[0]!) ?? [];
    t.match(lastFour, /^[\p{L}\p{N}]{0,4}$/u, 'the Rx number shows four letters or digits at most');
    assertPlain(t, drug ?? '', 'drug name');
  }
});

t.test('a veteran with 20,000 packages gets one email VA Notify accepts, naming how many more', async (t) => {
  const { sql } = await testDatabase(t);
  const packages = 20_000;
  for (let from = 0; from < packages; from += 4000) {
    await insertDispenses(
      sql,
      Array.from({ length: 4000 }, (_, i) => ({
        patient_icn: icn(3),
        rx_number: String(1_000_000 + from + i),
        tracking_number: `1Z${String(from + i).padStart(16, '0')}`,
        drug_name: 'D'.repeat(40),
        shipped_at: new Date(Date.UTC(2026, 4, 14, 0, 0, (from + i) % 60)),
      })),
    );
  }
  // Two more prescriptions in one package than one package lists.
  await insertDispenses(
    sql,
    Array.from({ length: 22 }, (_, i) => ({
      patient_icn: icn(3),
      rx_number: String(2_000_000 + i),
      tracking_number: '1Z0000000000000000',
      drug_name: 'E',
    })),
  );
  t.match(await group(sql), { emailsCreated: 1, dispensesGrouped: packages + 22 });
  const [email] = await sql<{ personalisation: { tracking_info: string; package_count: string }; package_count: number }[]>`
    select personalisation, package_count from tracking_email`;
  const { personalisation } = email!;
  t.equal(email!.package_count, packages, 'the email still counts every package');
  t.equal(personalisation.package_count, String(packages));
  const request = JSON.stringify({
    template_id: '00000000-0000-0000-0000-000000000000',
    recipient_identifier: { id_type: 'ICN', id_value: icn(3) },
    personalisation,
  });
  t.ok(Buffer.byteLength(request) < 1024 * 1024, `the send request is under VA Notify's 1 MiB (${Buffer.byteLength(request)} bytes)`);
  const blocks = personalisation.tracking_info.split('\n\n');
  t.equal(blocks.length, 51, 'the first 50 packages, then the rest counted');
  t.equal(blocks.at(-1), 'and 19950 more packages');
  t.match(blocks[0], /1Z0000000000000000[\s\S]*- and 3 more prescriptions$/, 'a package lists 20 prescriptions and counts the rest');
  t.equal(blocks[0]!.split('\n').length, 1 + 20 + 1);

  const small = await testDatabase(t);
  await insertDispenses(
    small.sql,
    Array.from({ length: 3 }, (_, i) => ({ patient_icn: icn(4), rx_number: String(3_000_000 + i), tracking_number: `T${i}` })),
  );
  await group(small.sql, { EMAIL_MAX_PACKAGES_LISTED: '2' });
  const [capped] = await small.sql<{ personalisation: { tracking_info: string } }[]>`select personalisation from tracking_email`;
  t.match(capped!.personalisation.tracking_info, /\n\nand 1 more package$/, 'EMAIL_MAX_PACKAGES_LISTED sets the cap; one package is one');
});
