// No SSN shape CMOP could send is stored, wherever in a message it is: PID-2 and PID-4 with or
// without a type, a component of the ICN's own PID-3 repetition, GT1, NK1, IN1, IN2, NTE text, a
// JSON key of any name. And masking takes nothing ingest needs: the dispenses read from the masked
// body are those read from the body as sent.
import t from 'tap';
import fc from 'fast-check';
import { maskSsns } from '../../src/ingest/mask.ts';
import { parseHl7Body } from '../../src/ingest/hl7.ts';
import { parseJsonBody } from '../../src/ingest/json.ts';

/** An SSN in the never-issued 666 range, as a sender may write it. */
const ssn = fc.tuple(fc.integer({ min: 0, max: 999_999 }), fc.constantFrom('', ' ', '-')).map(([n, sep]) => {
  const digits = `666${String(n).padStart(6, '0')}`;
  return { digits, written: sep === '' ? digits : `${digits.slice(0, 3)}${sep}${digits.slice(3, 5)}${sep}${digits.slice(5)}` };
});

const digits = (min: number, max: number) => fc.integer({ min, max }).chain((n) => fc.stringMatching(new RegExp(`^[1-9][0-9]{${n - 1}}$`)));
const icn = fc.tuple(digits(10, 10), digits(6, 6)).map(([a, b]) => `${a}V${b}`);
// Identifiers ingest keeps: any length CMOP uses, nine digits included.
const mhvId = digits(7, 10);
const rxNumber = digits(6, 10);
const tracking = fc.oneof(digits(12, 22), digits(9, 9), fc.stringMatching(/^1Z[0-9A-Z]{16}$/));

const encodings = [
  { f: '|', c: '^', r: '~', s: '&', msh2: '^~\\&' },
  { f: '|', c: '~', r: '^', s: '&', msh2: '~^\\&' },
];

type Place =
  | 'PID-2'
  | 'PID-2 typed'
  | 'PID-4'
  | 'PID-3.2 of the ICN'
  | 'PID-3 untyped'
  | 'PID-5'
  | 'GT1'
  | 'NK1'
  | 'IN1'
  | 'IN2'
  | 'NTE'
  | 'ZPI';
const places: Place[] = [
  'PID-2',
  'PID-2 typed',
  'PID-4',
  'PID-3.2 of the ICN',
  'PID-3 untyped',
  'PID-5',
  'GT1',
  'NK1',
  'IN1',
  'IN2',
  'NTE',
  'ZPI',
];

const hl7Case = fc.record({
  encoding: fc.constantFrom(...encodings),
  icn,
  mhvId,
  rxNumber,
  tracking,
  ssns: fc.array(fc.tuple(fc.constantFrom(...places), ssn), { minLength: 1, maxLength: 6 }),
});

function hl7Message(k: fc.Arbitrary<unknown> extends never ? never : typeof hl7Case extends fc.Arbitrary<infer T> ? T : never): {
  body: string;
  ssns: string[];
} {
  const { f, c, r, msh2 } = k.encoding;
  const at = (place: Place) => k.ssns.filter(([p]) => p === place).map(([, s]) => s.written);
  const pid2 = [...at('PID-2'), ...at('PID-2 typed').map((s) => `${s}${c}${c}${c}USSSA${c}SS`)].join(r);
  const pid3 = [
    `${k.icn}${c}${at('PID-3.2 of the ICN')[0] ?? ''}${c}${c}USVHA${c}NI`,
    ...at('PID-3 untyped').map((s) => `${s}${c}4${c}M11`),
    `${k.mhvId}${c}${c}${c}200MHS${c}PI`,
  ].join(r);
  const segment = (name: string, fields: number, place: Place) =>
    at(place).map((s, i) => `${name}${f}${i + 1}${f.repeat(fields)}${s}${f}CMOPTEST${c}GUARANTOR`);
  const lines = [
    `MSH${f}${msh2}${f}CMOP${f}521${f}MHV${f}MHV${f}20260514160512${f}${f}RDS${c}O13${f}PROP-1${f}P${f}2.5`,
    `PID${f}${f}${pid2}${f}${pid3}${f}${at('PID-4').join(r)}${f}CMOPTEST${c}${at('PID-5').join(' ')}${f}${f}19500101`,
    ...segment('NK1', 36, 'NK1'),
    ...segment('GT1', 11, 'GT1'),
    ...segment('IN1', 15, 'IN1'),
    ...segment('IN2', 1, 'IN2'),
    ...segment('ZPI', 3, 'ZPI'),
    `ORC${f}RE${f}521-${k.rxNumber}-1`,
    `RXD${f}1${f}00093718098${c}SIMVASTATIN 40MG TAB${c}NDC${f}20260514102210${f}90${f}TAB${f}${f}${k.rxNumber}${f.repeat(6)}${k.tracking}`,
    ...at('NTE').map((s, i) => `NTE${f}${i + 1}${f}${f}veteran gave SSN ${s} on the phone`),
    `ZR2${f}UPS${f}${k.tracking}${f}${k.rxNumber}`,
  ];
  return { body: lines.join('\r'), ssns: k.ssns.map(([, s]) => s.digits) };
}

/** The SSN's nine digits, in whatever form, found in the text. */
function holdsSsn(text: string, ssnDigits: string): boolean {
  return text.replace(/[ -]/g, '').includes(ssnDigits);
}

t.test('HL7: no generated SSN is stored, and the dispenses read are the same', async (t) => {
  fc.assert(
    fc.property(hl7Case, (k) => {
      const { body, ssns } = hl7Message(k);
      const masked = maskSsns(body);
      for (const s of ssns)
        if (holdsSsn(masked.replace(/\d{10,}/g, ''), s)) throw new Error(`SSN ${s} left in:\n${masked.replaceAll('\r', '\n')}`);
      const before = parseHl7Body(body);
      const after = parseHl7Body(masked);
      if (before.kind !== 'hl7' || after.kind !== 'hl7') throw new Error('not read');
      const fields = (m: typeof before.messages) => m.map((x) => ({ ack: x.ack, dispenses: x.dispenses }));
      t.same(fields(after.messages), fields(before.messages));
      const [dispense] = after.messages[0]!.dispenses;
      return (
        dispense?.veteranIcn === k.icn &&
        dispense.mhvCorrelationId === k.mhvId &&
        dispense.rxNumber === k.rxNumber &&
        dispense.trackingNumber === k.tracking
      );
    }),
    { numRuns: 300 },
  );
});

const jsonKey = fc
  .oneof(fc.constantFrom('patientSsn', 'SSN_NUMBER', 'note', 'ssn', 'taxId', 'extra', 'comment'), fc.string({ minLength: 1, maxLength: 8 }))
  .filter(
    (k) =>
      ![
        'patient',
        'prescription',
        'carrier',
        'drugName',
        '__proto__',
        'messageId',
        'stationNumber',
        'icn',
        'mhvCorrelationId',
        'rxNumber',
        'fillNumber',
        'ndc',
        'quantity',
        'trackingNumber',
        'dispensedAt',
        'shippedAt',
      ].includes(k),
  );

// Keys of the event's own fields are left out: an SSN-shaped carrier is masked, which changes the event.
t.test('JSON: no SSN under any other key is stored, and the events read are the same', async (t) => {
  const jsonCase = fc.record({
    icn,
    mhvId,
    rxNumber,
    tracking,
    extras: fc.array(fc.tuple(jsonKey, ssn, fc.constantFrom('string', 'number', 'nested', 'array', 'text')), {
      minLength: 1,
      maxLength: 5,
    }),
  });
  fc.assert(
    fc.property(jsonCase, (k) => {
      const event: Record<string, unknown> = {
        messageId: 'json-1',
        stationNumber: '521',
        patient: { icn: k.icn, mhvCorrelationId: k.mhvId },
        prescription: { rxNumber: k.rxNumber, fillNumber: 1 },
        carrier: 'UPS',
        trackingNumber: k.tracking,
      };
      const patient = event.patient as Record<string, unknown>;
      k.extras.forEach(([key, s, shape], i) => {
        const value =
          shape === 'number' && s.written === s.digits
            ? Number(s.digits)
            : shape === 'nested'
              ? { [key]: s.written }
              : shape === 'array'
                ? [s.written]
                : shape === 'text'
                  ? `said ${s.written}.`
                  : s.written;
        (i % 2 === 0 ? event : patient)[`${key}`] = value;
      });
      const body = JSON.stringify([event]);
      const masked = maskSsns(body, 'json');
      for (const [, s] of k.extras) {
        if (
          holdsSsn(masked.replace(/\d{10,}/g, ''), s.digits) &&
          !holdsSsn(JSON.stringify([k.icn, k.mhvId, k.rxNumber, k.tracking]).replace(/\d{10,}/g, ''), s.digits)
        ) {
          throw new Error(`SSN ${s.digits} left in ${masked}`);
        }
      }
      const before = parseJsonBody(body);
      const after = parseJsonBody(masked);
      if (before.kind !== 'events' || after.kind !== 'events') throw new Error('not read');
      t.same(after.dispenses, before.dispenses);
      return after.dispenses[0]?.trackingNumber === k.tracking && after.dispenses[0]?.mhvCorrelationId === k.mhvId;
    }),
    { numRuns: 300 },
  );
});
