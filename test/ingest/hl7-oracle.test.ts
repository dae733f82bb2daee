// The service's HL7 field reader (src/ingest/hl7-reader.ts) against node-hl7-client, the library it
// replaced, kept as a test-only oracle. Messages are generated with random encoding characters
// (VistA's `~^\&` and the standard `|^~\&` among them), repetitions, components, subcomponents and
// escape sequences; every piece of the segments the adapter reads must come out of our reader as the
// library reads it, and as exactly the value the generator encoded (trimmed, as the adapter trims).
import fc from 'fast-check';
import { Message } from 'node-hl7-client';
import t from 'tap';
import { normaliseCarrier } from '../../src/ingest/dispense.ts';
import { Hl7Segment, type Hl7Encoding } from '../../src/ingest/hl7-reader.ts';
import { parseHl7Body } from '../../src/ingest/hl7.ts';

// ---- Values as tokens: each knows the text it is sent as and the text it decodes to.

type Delimiter = keyof Hl7Encoding;

type Token =
  | { kind: 'char'; ch: string; asHex: boolean; lowerHex: boolean }
  | { kind: 'delimiter'; which: Delimiter }
  | { kind: 'hex'; codes: number[]; lowerHex: boolean }
  /** \H\ \N\ \Zxx\ \Cxxyy\ \Mxxyyzz\: sent, but decode to nothing. */
  | { kind: 'dropped'; inner: string }
  /** \.br\ and the other formatting commands: kept as written. */
  | { kind: 'formatting'; inner: string };

/** A leaf (one subcomponent): tokens, and optionally an escape character with no partner at its end. */
interface Leaf {
  tokens: Token[];
  loneEscape: boolean;
}

const delimiterPool = ['|', '^', '~', '\\', '&', '#', '!', '*', '$', '%', '@', '+', ';', '?', '='];
const delimiterCodes: Record<Delimiter, string> = { field: 'F', component: 'S', subcomponent: 'T', repetition: 'R', escape: 'E' };

function hexOf(code: number, lower: boolean): string {
  const hex = code.toString(16).padStart(2, '0').toUpperCase();
  return lower ? hex.toLowerCase() : hex;
}

function encodeToken(token: Token, enc: Hl7Encoding): string {
  const e = enc.escape;
  switch (token.kind) {
    case 'char': {
      const delimiter = (Object.keys(delimiterCodes) as Delimiter[]).find((d) => enc[d] === token.ch);
      if (delimiter !== undefined) return `${e}${delimiterCodes[delimiter]}${e}`;
      return token.asHex ? `${e}X${hexOf(token.ch.charCodeAt(0), token.lowerHex)}${e}` : token.ch;
    }
    case 'delimiter':
      return `${e}${delimiterCodes[token.which]}${e}`;
    case 'hex':
      return `${e}X${token.codes.map((c) => hexOf(c, token.lowerHex)).join('')}${e}`;
    case 'dropped':
    case 'formatting':
      return `${e}${token.inner}${e}`;
  }
}

function decodeToken(token: Token, enc: Hl7Encoding): string {
  switch (token.kind) {
    case 'char':
      return token.ch;
    case 'delimiter':
      return enc[token.which];
    case 'hex':
      return String.fromCharCode(...token.codes);
    case 'dropped':
      return '';
    case 'formatting':
      return `${enc.escape}${token.inner}${enc.escape}`;
  }
}

const encodeLeaf = (leaf: Leaf, enc: Hl7Encoding) =>
  leaf.tokens.map((tk) => encodeToken(tk, enc)).join('') + (leaf.loneEscape ? enc.escape : '');
const decodeLeaf = (leaf: Leaf, enc: Hl7Encoding) =>
  leaf.tokens.map((tk) => decodeToken(tk, enc)).join('') + (leaf.loneEscape ? enc.escape : '');

/** Plain characters: letters, digits, space, accents and every delimiter candidate (sent escaped when it is one). */
const plainChars = [...'AZaz09 7.,-/:()\'"_é', ...delimiterPool];
const hexDigits = [...'0123456789ABCDEFabcdef'];

const charToken = (chars: fc.Arbitrary<string>): fc.Arbitrary<Token> =>
  fc.record({ kind: fc.constant('char' as const), ch: chars, asHex: fc.boolean(), lowerHex: fc.boolean() });

const token: fc.Arbitrary<Token> = fc.oneof(
  { weight: 6, arbitrary: charToken(fc.constantFrom(...plainChars)) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('delimiter' as const),
      which: fc.constantFrom<Delimiter>('field', 'component', 'repetition', 'escape', 'subcomponent'),
    }),
  },
  // Any byte: CR and LF (as escapeHl7 writes them), MLLP framing bytes, Latin-1. Not NUL, which the
  // reader refuses on purpose (a test below).
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('hex' as const),
      codes: fc.array(fc.integer({ min: 1, max: 255 }), { maxLength: 4 }),
      lowerHex: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc
      .oneof(
        fc.constantFrom('H', 'N'),
        fc.string({ unit: fc.constantFrom(...'ABZ019'), maxLength: 4 }).map((s) => `Z${s}`),
        fc.string({ unit: fc.constantFrom(...hexDigits), minLength: 4, maxLength: 4 }).map((s) => `C${s}`),
        fc.string({ unit: fc.constantFrom(...hexDigits), minLength: 6, maxLength: 6 }).map((s) => `M${s}`),
      )
      .map((inner) => ({ kind: 'dropped' as const, inner })),
  },
  // Formatting commands hold no delimiter candidate (HL7's \.in+4\ would, when + is one).
  {
    weight: 1,
    arbitrary: fc
      .constantFrom('.br', '.sp', '.sp2', '.fi', '.nf', '.in-4', '.ti-2', '.ce', '.sk3')
      .map((inner) => ({ kind: 'formatting' as const, inner })),
  },
);

const leaf: fc.Arbitrary<Leaf> = fc.record({
  tokens: fc.array(token, { maxLength: 6 }),
  loneEscape: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

/** A field: repetitions of components of subcomponents. */
type Field = Leaf[][][];
const field: fc.Arbitrary<Field> = fc.array(fc.array(fc.array(leaf, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 6 }), {
  minLength: 1,
  maxLength: 3,
});
const emptyField: Field = [[[{ tokens: [], loneEscape: false }]]];

const encodeField = (f: Field, enc: Hl7Encoding) =>
  f.map((rep) => rep.map((comp) => comp.map((l) => encodeLeaf(l, enc)).join(enc.subcomponent)).join(enc.component)).join(enc.repetition);

/** Five distinct delimiters: the standard set, VistA's, or any other a sender may choose. */
const encoding: fc.Arbitrary<Hl7Encoding> = fc.oneof(
  fc.constant<Hl7Encoding>({ field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' }),
  fc.constant<Hl7Encoding>({ field: '|', component: '~', repetition: '^', escape: '\\', subcomponent: '&' }),
  fc
    .shuffledSubarray(delimiterPool, { minLength: 5, maxLength: 5 })
    .map(([f, c, r, e, s]) => ({ field: f!, component: c!, repetition: r!, escape: e!, subcomponent: s! })),
);

const encodingCharacters = (enc: Hl7Encoding) => `${enc.component}${enc.repetition}${enc.escape}${enc.subcomponent}`;

// ---- Reading through the oracle

type LibraryNode = { toArray(): LibraryNode[]; toString(): string; read(path: string[]): LibraryNode | undefined; name: string };

function librarySegments(lines: string[]): LibraryNode[] {
  return (new Message({ text: lines.join('\r') }) as unknown as LibraryNode).toArray();
}

/** What the adapter used to read: component `c`, subcomponent `s` of repetition `r` of field `n`, trimmed. */
function libraryValue(segment: LibraryNode, n: number, c: number, s: number, r: number): string {
  const repetition = segment.read([String(n)])?.toArray()[r - 1];
  const sub = repetition?.toArray()[c - 1]?.toArray()[s - 1];
  return sub === undefined ? '' : sub.toString().trim();
}

function libraryRepetitionCount(segment: LibraryNode, n: number): number {
  return segment.read([String(n)])?.toArray().length ?? 0;
}

// ---- Reader against oracle against generator, piece by piece

interface GeneratedSegment {
  name: string;
  /** Fields from number `first` on (MSH: from MSH-3; others from 1). */
  fields: Field[];
}

const segmentFields = (maxFields: number) =>
  fc.array(fc.oneof({ weight: 1, arbitrary: fc.constant(emptyField) }, { weight: 2, arbitrary: field }), { maxLength: maxFields });

const messageShape = fc.record({
  encoding,
  msh: segmentFields(10),
  segments: fc.array(fc.record({ name: fc.constantFrom('PID', 'ORC', 'RXD', 'ZR2', 'NTE', 'PV1'), fields: segmentFields(20) }), {
    minLength: 1,
    maxLength: 4,
  }),
});

function segmentLine(segment: GeneratedSegment, enc: Hl7Encoding): string {
  const head = segment.name === 'MSH' ? ['MSH', encodingCharacters(enc)] : [segment.name];
  return [...head, ...segment.fields.map((f) => encodeField(f, enc))].join(enc.field);
}

t.test('every repetition, component and subcomponent reads as the library reads it and as it was generated', async (t) => {
  let pieces = 0;
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(messageShape, ({ encoding: enc, msh, segments }) => {
        const generated: GeneratedSegment[] = [{ name: 'MSH', fields: msh }, ...segments];
        // The adapter reads segments without their trailing white space, as the library did.
        const lines = generated.map((g) => segmentLine(g, enc).trimEnd());
        const oracle = librarySegments(lines);
        generated.forEach((g, i) => {
          const ours = new Hl7Segment(lines[i]!, enc);
          const theirs = oracle[i]!;
          if (ours.name !== theirs.name) throw new Error(`segment name ${ours.name} vs the library's ${theirs.name}`);
          const first = g.name === 'MSH' ? 3 : 1;
          // One field, repetition, component and subcomponent past the generated ones: absent is ''.
          for (let n = first; n <= first + g.fields.length; n++) {
            const f = g.fields[n - first];
            const sent = f === undefined ? '' : encodeField(f, enc);
            if (ours.raw(n) !== (n === first + g.fields.length - 1 ? sent.trimEnd() : sent))
              throw new Error(`${g.name}-${n} raw text differs from what was sent`);
            if (ours.repetitionCount(n) !== libraryRepetitionCount(theirs, n))
              throw new Error(`${g.name}-${n}: repetition count differs from the library's`);
            const reps = f ?? emptyField;
            for (let r = 1; r <= reps.length + 1; r++) {
              const comps = reps[r - 1] ?? emptyField[0]!;
              for (let c = 1; c <= comps.length + 1; c++) {
                const subs = comps[c - 1] ?? emptyField[0]![0]!;
                for (let s = 1; s <= subs.length + 1; s++) {
                  const l = subs[s - 1];
                  const expected = l === undefined ? '' : decodeLeaf(l, enc).trim();
                  const got = ours.value(n, c, s, r);
                  const library = libraryValue(theirs, n, c, s, r);
                  const where = `${g.name}-${n} repetition ${r} component ${c} subcomponent ${s} in ${JSON.stringify(lines[i])}`;
                  if (got !== library) throw new Error(`${where}: ours ${JSON.stringify(got)}, the library's ${JSON.stringify(library)}`);
                  if (got !== expected) throw new Error(`${where}: ours ${JSON.stringify(got)}, generated ${JSON.stringify(expected)}`);
                  pieces++;
                }
              }
            }
          }
        });
      }),
      { numRuns: 300 },
    ),
  );
  t.ok(pieces > 10_000, `${pieces} pieces compared`);
});

t.test('MSH-1 is the field separator itself; MSH-2 the encoding characters', async (t) => {
  for (const enc of [
    { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' },
    { field: '|', component: '~', repetition: '^', escape: '\\', subcomponent: '&' },
    { field: '#', component: '!', repetition: '*', escape: '$', subcomponent: '%' },
  ]) {
    const line = ['MSH', encodingCharacters(enc), 'CMOP', '521', 'MHV'].join(enc.field);
    const msh = new Hl7Segment(line, enc);
    t.same(
      [msh.raw(1), msh.raw(2), msh.raw(3), msh.raw(4), msh.raw(5), msh.raw(6)],
      [enc.field, encodingCharacters(enc), 'CMOP', '521', 'MHV', ''],
    );
    t.same(
      [msh.value(3), msh.value(4)],
      [libraryValue(librarySegments([line])[0]!, 3, 1, 1, 1), libraryValue(librarySegments([line])[0]!, 4, 1, 1, 1)],
    );
    const pid = new Hl7Segment(['PID', '1', 'X'].join(enc.field), enc);
    t.same([pid.raw(1), pid.raw(2), pid.raw(3)], ['1', 'X', ''], 'other segments number their fields from the name on');
  }
});

t.test('a hex escape that is not pairs of hex digits is refused by name, without the text', async (t) => {
  const enc = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };
  for (const bad of ['\\XZZ\\', '\\X0\\', '\\X4G\\', '\\X-1\\']) {
    const rxd = new Hl7Segment(`RXD|1|SECRET${bad}^DRUG`, enc);
    t.throws(() => rxd.value(2), { message: 'RXD-2: a hex escape sequence (\\X…\\) is not pairs of hex digits' }, bad);
    t.equal(rxd.value(2, 2), 'DRUG', 'only the piece that is read is decoded');
  }
  const body = `MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|H-1|P|2.5\rPID|||1012345678V123456^^^USVHA^NI\rRXD|1|X^A\\XZZ\\B^L|20260514|1|||700||||||1Z1`;
  const result = parseHl7Body(body);
  if (result.kind !== 'hl7') throw new Error(result.reason);
  t.match(result.messages[0], {
    ack: 'AR',
    header: { controlId: 'H-1' },
    errors: ['the message could not be parsed: RXD-2: a hex escape sequence (\\X…\\) is not pairs of hex digits'],
  });
});

t.test('a hex escape that stands for NUL is refused by name (Postgres text cannot hold one); the library read it', async (t) => {
  const enc = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };
  for (const nul of ['\\X00\\', '\\X4100\\', '\\X0041\\']) {
    const line = `RXD|1|SECRET${nul}^DRUG`;
    t.ok(libraryValue(librarySegments(['MSH|^~\\&|CMOP', line])[1]!, 2, 1, 1, 1).includes('\0'), `the library read ${nul} as a NUL`);
    const rxd = new Hl7Segment(line, enc);
    t.throws(
      () => rxd.value(2),
      { message: 'RXD-2: a hex escape sequence (\\X…\\) stands for a NUL character (U+0000), which cannot be stored' },
      nul,
    );
    t.equal(rxd.value(2, 2), 'DRUG', 'only the piece that is read is decoded');
  }
});

t.test('a line separator inside a segment is text, not a second MSH (the library refused the message)', async (t) => {
  const lines = [
    'MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|U-1|P|2.5',
    'PID|||1012345678V123456^^^USVHA^NI',
    'NTE|1||see\u2028MSH|note',
    'RXD|1|X^DRUG^L|20260514|1|||701||||||1Z2',
  ];
  t.throws(() => librarySegments(lines), { message: /Multiple MSH segments/ });
  const result = parseHl7Body(lines.join('\r'));
  if (result.kind !== 'hl7') throw new Error(result.reason);
  t.match(result.messages, [{ ack: 'AA', dispenses: [{ rxNumber: '701', trackingNumber: '1Z2', drugName: 'DRUG' }] }]);
});

// ---- The adapter's own reads, through parseHl7Body, against the generator and the library

/** A value that must not be blank: it is the message's identity or what the email says. */
const requiredLeaf = fc.record({ tokens: fc.array(token, { minLength: 1, maxLength: 8 }), loneEscape: fc.constant(false) });

/** Digits and letters only, each maybe sent as \Xhh\: for identifiers the adapter validates (ICN, fill). */
const identifierLeaf = (text: string): fc.Arbitrary<Leaf> =>
  fc.array(fc.boolean(), { minLength: text.length, maxLength: text.length }).chain((hex) =>
    fc.array(fc.boolean(), { minLength: text.length, maxLength: text.length }).map((lower) => ({
      tokens: [...text].map((ch, i): Token => ({ kind: 'char', ch, asHex: hex[i]!, lowerHex: lower[i]! })),
      loneEscape: false,
    })),
  );

/**
 * A field holding `value` at subcomponent 1 of component `component` of its first repetition, its
 * other components, subcomponents and repetitions random noise that the adapter must not read.
 */
const around = (value: fc.Arbitrary<Leaf>, component: number): fc.Arbitrary<Field> =>
  fc.record({ value, noise: field, extraSubs: fc.array(leaf, { maxLength: 2 }) }).map(({ value, noise, extraSubs }) => {
    const [first, ...otherReps] = noise as [Leaf[][], ...Leaf[][][]];
    const before = first.slice(0, component - 1);
    while (before.length < component - 1) before.push([{ tokens: [], loneEscape: false }]);
    return [[...before, [value, ...extraSubs], ...first.slice(component)], ...otherReps];
  });
const valueIn = (f: Field, component: number): Leaf => f[0]![component - 1]![0]!;

const plain = (text: string): Leaf => ({
  tokens: [...text].map((ch): Token => ({ kind: 'char', ch, asHex: false, lowerHex: false })),
  loneEscape: false,
});
const plainField = (...components: string[]): Field => [components.map((c) => [plain(c)])];

t.test('the fields the adapter reads come out as generated and as the library reads them', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(
        encoding,
        fc.record({
          controlId: around(requiredLeaf, 1),
          drug: around(requiredLeaf, 2),
          rx: around(requiredLeaf, 1),
          tracking: around(requiredLeaf, 1),
          carrier: around(leaf, 1),
          fill: around(identifierLeaf('2'), 1),
          icn: identifierLeaf('1012345678V123456'),
          mhv: requiredLeaf,
        }),
        fc.shuffledSubarray([0, 1, 2], { minLength: 3, maxLength: 3 }),
        fc.constantFrom('\r', '\n', '\r\n'),
        (enc, f, order, separator) => {
          const decoded = (l: Leaf) => decodeLeaf(l, enc).trim();
          fc.pre(decoded(valueIn(f.controlId, 1)) !== '' && decoded(valueIn(f.rx, 1)) !== '' && decoded(valueIn(f.tracking, 1)) !== '');
          // PID-3: the ICN, the MHV correlation id and an SSN, in any order.
          const ids: Leaf[][][] = [
            [[f.icn], [plain('')], [plain('')], [plain('USVHA')], [plain('NI')]],
            [[f.mhv], [plain('')], [plain('')], [plain('200MHS')], [plain('PI')]],
            [[plain('666001234')], [plain('')], [plain('')], [plain('USSSA')], [plain('SS')]],
          ];
          const generated: GeneratedSegment[] = [
            {
              name: 'MSH',
              fields: [
                plainField('CMOP'),
                plainField('521'),
                plainField('MHV'),
                plainField('MHV'),
                plainField('20260514160512'),
                emptyField,
                plainField('RDS', 'O13'),
                f.controlId,
                plainField('P'),
                plainField('2.5'),
              ],
            },
            { name: 'PID', fields: [emptyField, emptyField, order.map((i) => ids[i]!)] },
            { name: 'ORC', fields: [plainField('RE'), plainField('1')] },
            {
              name: 'RXD',
              fields: [
                f.fill,
                f.drug,
                plainField('20260514'),
                plainField('1'),
                emptyField,
                emptyField,
                f.rx,
                emptyField,
                emptyField,
                emptyField,
                emptyField,
                emptyField,
                f.tracking,
              ],
            },
            { name: 'ZR2', fields: [f.carrier] },
          ];
          const lines = generated.map((g) => segmentLine(g, enc));
          const result = parseHl7Body(lines.join(separator));
          if (result.kind !== 'hl7') throw new Error(result.reason);
          const [message] = result.messages;
          const [dispense] = message?.dispenses ?? [];
          const got = {
            ack: message?.ack,
            controlId: dispense?.messageControlId,
            drug: dispense?.drugName,
            rx: dispense?.rxNumber,
            fill: dispense?.fillNumber,
            tracking: dispense?.trackingNumber,
            carrier: dispense?.carrier,
            icn: dispense?.veteranIcn,
            mhv: dispense?.mhvCorrelationId,
          };
          const expected = {
            ack: 'AA',
            controlId: decoded(valueIn(f.controlId, 1)),
            drug: decoded(valueIn(f.drug, 2)) || null,
            rx: decoded(valueIn(f.rx, 1)),
            fill: 2,
            tracking: decoded(valueIn(f.tracking, 1)),
            carrier: normaliseCarrier(decoded(valueIn(f.carrier, 1))),
            icn: '1012345678V123456',
            mhv: decoded(f.mhv) || null,
          };
          const [msh, pid, , rxd, zr2] = librarySegments(lines) as [LibraryNode, LibraryNode, LibraryNode, LibraryNode, LibraryNode];
          const pidRepetitions = Array.from({ length: libraryRepetitionCount(pid, 3) }, (_, i) => i + 1);
          const libraryId = (type: string) =>
            pidRepetitions.filter((r) => libraryValue(pid, 3, 5, 1, r) === type).map((r) => libraryValue(pid, 3, 1, 1, r))[0];
          const library = {
            ack: 'AA',
            controlId: libraryValue(msh, 10, 1, 1, 1),
            drug: libraryValue(rxd, 2, 2, 1, 1) || null,
            rx: libraryValue(rxd, 7, 1, 1, 1),
            fill: Number(libraryValue(rxd, 1, 1, 1, 1)),
            tracking: libraryValue(rxd, 13, 1, 1, 1),
            carrier: normaliseCarrier(libraryValue(zr2, 1, 1, 1, 1)),
            icn: libraryId('NI'),
            mhv: libraryId('PI') || null,
          };
          const sent = JSON.stringify(lines);
          if (JSON.stringify(got) !== JSON.stringify(expected))
            throw new Error(`generated ${JSON.stringify(expected)}, the adapter read ${JSON.stringify(got)} from ${sent}`);
          if (JSON.stringify(got) !== JSON.stringify(library))
            throw new Error(`the library read ${JSON.stringify(library)}, the adapter ${JSON.stringify(got)} from ${sent}`);
        },
      ),
      { numRuns: 300 },
    ),
  );
});
