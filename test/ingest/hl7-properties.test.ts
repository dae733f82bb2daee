// Properties of the HL7 adapter over generated input: whatever arrives, the adapter answers with
// results instead of throwing, and a value escaped with any sender's encoding characters comes back
// out of the parser exactly as it went in.
import fc from 'fast-check';
import t from 'tap';
import { buildAck, escapeHl7, parseHl7Body, type Hl7Encoding } from '../../src/ingest/hl7.ts';
import { maskSsns } from '../../src/ingest/mask.ts';
import { readSample } from '../support/ingest.ts';

const sampleBodies = [
  'rds-r06-batch.hl7',
  'rds-o13-one-package-two-rx.hl7',
  'rrd-o14-vista-encoding-cr.hl7',
  'bad/no-icn.hl7',
  'bad/truncated.hl7',
].map(readSample);

/** Characters that upset HL7 readers: every delimiter, escape starts, separators, framing. */
const nasty = [
  '|',
  '^',
  '~',
  '\\',
  '&',
  '\r',
  '\n',
  '\r\n',
  '\x0b',
  '\x1c',
  'MSH|',
  'MSH|^~\\&|',
  'PID|',
  'RXD|',
  'ZR2|',
  'FHS|',
  '\\X0D\\',
  '\\X00\\',
  '\\E\\',
  '\\F',
  'é',
  '\u0000',
];

type Mutation =
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'truncate'; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.oneof(fc.constantFrom(...nasty), fc.string({ maxLength: 8 })) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 20 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function mutate(body: string, mutations: Mutation[]): string {
  let text = body;
  for (const m of mutations) {
    const at = text.length === 0 ? 0 : m.at % (text.length + 1);
    if (m.kind === 'insert') text = text.slice(0, at) + m.text + text.slice(at);
    else if (m.kind === 'delete') text = text.slice(0, at) + text.slice(at + m.length);
    else text = text.slice(0, at);
  }
  return text;
}

/** Parses, masks and acknowledges a body the way the ingest does; throws only if the adapter does. */
function runAdapter(body: string): void {
  const masked = maskSsns(body);
  if (maskSsns(masked) !== masked) throw new Error('masking is not stable');
  const result = parseHl7Body(masked);
  if (result.kind === 'not-hl7') {
    buildAck({ header: undefined, code: 'AR', text: result.reason, controlId: '1-1', now: new Date() });
    return;
  }
  for (const message of result.messages) {
    if (!['AA', 'AE', 'AR'].includes(message.ack)) throw new Error(`unexpected ack ${message.ack}`);
    if (message.ack !== 'AA' && message.errors.length === 0) throw new Error('a non-AA message without a reason');
    for (const d of message.dispenses) {
      if (!Number.isInteger(d.fillNumber) || d.rxNumber === '') throw new Error('a dispense without its identity');
      if (d.state === 'pending' && (d.veteranIcn === null || d.trackingNumber === ''))
        throw new Error('a pending dispense that cannot be emailed');
      // Postgres text cannot hold a NUL: one in any value would fail the whole body's insert.
      if (Object.values(d).some((v) => typeof v === 'string' && v.includes('\0'))) throw new Error('a dispense value with a NUL');
    }
    const ack = buildAck({ header: message.header, code: message.ack, text: message.errors.join('; '), controlId: '1-1', now: new Date() });
    if (/[\n]|\r(?!MSA|$)/.test(ack)) throw new Error('an ACK with a line break inside a segment');
  }
}

t.test('the adapter never throws on generated or mutated bodies', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.constantFrom(...sampleBodies), fc.array(mutation, { minLength: 1, maxLength: 6 }), (body, mutations) => {
        runAdapter(mutate(body, mutations));
      }),
      { numRuns: 300 },
    ),
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constantFrom(...nasty), fc.string({ maxLength: 12 })), { maxLength: 30 }), (parts) => {
        runAdapter(parts.join(''));
        runAdapter(`MSH|^~\\&|${parts.join('')}`);
      }),
      { numRuns: 300 },
    ),
  );
});

/** Five distinct delimiter characters, as a sender may choose them in MSH-1/MSH-2. */
const encoding: fc.Arbitrary<Hl7Encoding> = fc
  .shuffledSubarray(['|', '^', '~', '\\', '&', '#', '!', '*', '$', '%', '@', '+', ';', '?', '='], { minLength: 5, maxLength: 5 })
  .map(([field, component, repetition, escapeCharacter, subcomponent]) => ({
    field: field!,
    component: component!,
    repetition: repetition!,
    escape: escapeCharacter!,
    subcomponent: subcomponent!,
  }));

/** Field values full of delimiter characters (and line breaks), trimmed and non-empty. */
const fieldValue = fc
  .string({
    unit: fc.constantFrom(
      '|',
      '^',
      '~',
      '\\',
      '&',
      '#',
      '!',
      '*',
      '$',
      '%',
      '@',
      '+',
      ';',
      '?',
      '=',
      'A',
      'z',
      '7',
      ' ',
      '\r',
      '\n',
      'F',
      'S',
      'T',
      'R',
      'E',
      'X',
    ),
    minLength: 1,
    maxLength: 24,
  })
  .filter((value) => value.trim() === value && value !== '');

t.test('values escaped with any encoding characters parse back unchanged', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(
        encoding,
        fc.record({ drug: fieldValue, rx: fieldValue, tracking: fieldValue, mhv: fieldValue, controlId: fieldValue }),
        fc.constantFrom('\r', '\n', '\r\n'),
        (enc, values, separator) => {
          const { field: f, component: c, repetition: r, escape: e, subcomponent: s } = enc;
          const esc = (value: string) => escapeHl7(value, enc);
          const body = [
            [
              'MSH',
              `${c}${r}${e}${s}`,
              'CMOP',
              '521',
              'MHV',
              'MHV',
              '20260514160512',
              '',
              `RDS${c}O13`,
              esc(values.controlId),
              'P',
              '2.5',
            ].join(f),
            ['PID', '', '', `1012345678V123456${c}${c}${c}USVHA${c}NI${r}${esc(values.mhv)}${c}${c}${c}200MHS${c}PI`].join(f),
            ['ORC', 'RE', '1'].join(f),
            [
              'RXD',
              '1',
              `X${c}${esc(values.drug)}${c}L`,
              '20260514',
              '1',
              '',
              '',
              esc(values.rx),
              '',
              '',
              '',
              '',
              '',
              esc(values.tracking),
            ].join(f),
          ].join(separator);

          const result = parseHl7Body(body);
          if (result.kind !== 'hl7') throw new Error(result.reason);
          const [message] = result.messages;
          const [dispense] = message?.dispenses ?? [];
          const got = {
            drug: dispense?.drugName,
            rx: dispense?.rxNumber,
            tracking: dispense?.trackingNumber,
            mhv: dispense?.mhvCorrelationId,
            controlId: dispense?.messageControlId,
          };
          if (JSON.stringify(got) !== JSON.stringify(values)) {
            throw new Error(`round trip changed a value: sent ${JSON.stringify(values)}, got ${JSON.stringify(got)}`);
          }
          // The ACK echoes MSH-10 unchanged, whatever it contains.
          const ack = buildAck({ header: message?.header, code: 'AA', text: 'accepted', controlId: '1-1', now: new Date() });
          if (!ack.includes(`\rMSA${f}AA${f}${esc(values.controlId)}${f}accepted\r`))
            throw new Error(`MSA-2 is not the message's MSH-10: ${JSON.stringify(ack)}`);
        },
      ),
      { numRuns: 300 },
    ),
  );
});
