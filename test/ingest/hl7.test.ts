// The HL7 shapes and quirks the reference names, beyond what the shared samples show.
import t from 'tap';
import { normaliseCarrier } from '../../src/ingest/dispense.ts';
import { buildAck, parseHl7Body, parseHl7Timestamp, type Hl7MessageResult } from '../../src/ingest/hl7.ts';

const msh = (controlId: string, type = 'RDS^O13', time = '20260514160512') =>
  `MSH|^~\\&|CMOP|521|MHV|MHV|${time}||${type}|${controlId}|P|2.5`;
const pid = 'PID|||1012345678V123456^^^USVHA^NI~10123456^^^200MHS^PI';
const rxd = (rx: string, tracking: string, drug = 'SIMVASTATIN 40MG TAB') =>
  `RXD|1|00093718098^${drug}^NDC|20260514102210|90|TAB||${rx}||||||${tracking}`;

function messagesOf(body: string): Hl7MessageResult[] {
  const result = parseHl7Body(body);
  if (result.kind !== 'hl7') throw new Error(result.reason);
  return result.messages;
}

t.test('escape sequences are decoded with the message’s own delimiters', async (t) => {
  const [message] = messagesOf([msh('E-1'), pid, 'ORC|RE|1', rxd('100', '1Z1', 'A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F')].join('\r'));
  t.equal(message?.dispenses[0]?.drugName, 'A|B^C&D~E\\F');
  const vista =
    'MSH|~^\\&|PSO|521|MHV|MHV|20260514||RRD~O14|V-1|P|2.4\rPID|||1012345678V123456~~~USVHA~NI\rRXD|1|D1~X\\S\\Y\\R\\Z~L|20260514||||200||||||94001';
  t.equal(messagesOf(vista)[0]?.dispenses[0]?.drugName, 'X~Y^Z', 'in VistA encoding \\S\\ is ~ and \\R\\ is ^');
});

t.test('CR, LF and CRLF separators, MLLP framing, a byte-order mark and blank lines are all read', async (t) => {
  const lines = [msh('S-1'), pid, 'ORC|RE|1', rxd('101', '1Z2'), 'ZR2|UPS|1Z2|101'];
  for (const [name, body] of [
    ['CR', lines.join('\r')],
    ['LF', lines.join('\n')],
    ['CRLF', lines.join('\r\n')],
    ['MLLP', `\x0b${lines.join('\r')}\r\x1c\r`],
    ['BOM and blank lines', `\uFEFF${lines.join('\r\n\r\n')}\r\n`],
  ] as const) {
    const [message] = messagesOf(body);
    t.match(message, { ack: 'AA', dispenses: [{ rxNumber: '101', trackingNumber: '1Z2', carrier: 'UPS' }] }, name);
  }
});

t.test('MLLP frames back to back are separate messages, with or without a CR after FS', async (t) => {
  const first = [msh('F-1'), pid, 'ORC|RE|1', rxd('110', '1Z10'), 'ZR2|UPS|1Z10|110'].join('\r');
  const second =
    'MSH|~^\\&|PSO|521|MHV|MHV|20260514||RRD~O14|F-2|P|2.4\rPID|||1000000123V456789~~~USVHA~NI\rORC|OR|111\rRXD|1|D1~DIGOXIN~L|20260514||||111||||||94111';
  for (const [name, body] of [
    ['no CR after FS, none before it', `\x0b${first}\x1c\x0b${second}\x1c\r`],
    ['CR after FS', `\x0b${first}\r\x1c\r\x0b${second}\r\x1c\r`],
    ['no VT', `${first}\x1c${second}\x1c`],
  ] as const) {
    const messages = messagesOf(body);
    t.same(
      messages.map((m) => [m.header?.controlId, m.ack, m.dispenses.map((d) => [d.rxNumber, d.veteranIcn, d.trackingNumber])]),
      [
        ['F-1', 'AA', [['110', '1012345678V123456', '1Z10']]],
        ['F-2', 'AA', [['111', '1000000123V456789', '94111']]],
      ],
      name,
    );
  }
  // A frame ends its message: a frame that holds no MSH adds nothing to the message before it.
  const result = parseHl7Body(`\x0b${[msh('F-3'), pid, 'ORC|RE|1'].join('\r')}\x1c\x0b${rxd('112', '1Z12')}\x1c\r`);
  t.match(result, {
    kind: 'hl7',
    messages: [{ ack: 'AE', errors: [/no RXD segment/] }],
    notes: ['1 line(s) before the first MSH were ignored'],
  });
});

t.test('the ICN from PID-17 when PID-3 has none; a malformed ICN is no ICN', async (t) => {
  const legacy = messagesOf(
    [msh('L-1'), 'PID|||7172676^^^USVHA^PI||CMOPTEST^OLD||||||||||||1011111111V222333', rxd('102', '1Z3')].join('\r'),
  );
  t.match(legacy[0], { ack: 'AA', dispenses: [{ veteranIcn: '1011111111V222333', state: 'pending' }] });
  const malformed = messagesOf([msh('L-2'), 'PID|||12345^^^USVHA^NI', rxd('103', '1Z4')].join('\r'));
  t.match(malformed[0], { ack: 'AE', dispenses: [{ veteranIcn: null, state: 'unprocessable', stateReason: /not in the form/ }] });
});

t.test('several ORC/RXD groups in one message, each with its own ZR2', async (t) => {
  const [message] = messagesOf(
    [
      msh('G-1'),
      pid,
      'NTE|1||note',
      'ORC|RE|1',
      rxd('104', ''),
      'ZR2|UPS|1Z5|104',
      'ZZZ|x',
      'ORC|RE|2',
      rxd('105', ''),
      'ZR2|FedEx|77|105',
    ].join('\r'),
  );
  t.equal(message?.ack, 'AA');
  t.same(
    message?.dispenses.map((d) => [d.rxNumber, d.carrier, d.trackingNumber]),
    [
      ['104', 'UPS', '1Z5'],
      ['105', 'FEDEX', '77'],
    ],
  );
});

t.test('a cancelled fill without a reason; a shipped fill without a tracking number', async (t) => {
  const [cancelled] = messagesOf(
    [msh('C-1', 'RDS^R06'), pid, 'ORC|CA|521-106-1', 'RXD|1|S1^DRUG^L|20260514|0|||106', 'ZR2|||106'].join('\r'),
  );
  t.match(cancelled, {
    ack: 'AA',
    dispenses: [{ state: 'cancelled', stateReason: 'cancelled by CMOP (ORC-1 CA)', shippedAt: null, trackingNumber: '' }],
  });
  const [untracked] = messagesOf(
    [msh('C-2', 'RDS^R06'), pid, 'ORC|OK|521-107-1', 'RXD|1|S1^DRUG^L|20260514|1|||107', 'ZR2|USPS||107'].join('\r'),
  );
  t.match(untracked, { ack: 'AE', dispenses: [{ state: 'unprocessable', stateReason: /no tracking number/ }] });
});

t.test('what is not a usable dispense message is answered AR or AE with the reason', async (t) => {
  const result = parseHl7Body(
    [
      msh('R-1', 'ADT^A08'),
      pid,
      msh('R-2'),
      pid,
      'ORC|RE|1',
      'MSH|^^\\&|CMOP|521',
      msh('R-4'),
      pid,
      'RXD||X^Y^NDC',
      msh('R-5'),
      pid,
      'ORC|RE|1',
      rxd('108', '1Z6'),
    ].join('\r'),
  );
  if (result.kind !== 'hl7') throw new Error('expected HL7');
  // The third has no MSH-10 to echo: its header is read by MSH-1 alone, and holds nothing there.
  t.same(
    result.messages.map((m) => [m.ack, m.header?.controlId ?? null]),
    [
      ['AR', 'R-1'],
      ['AE', 'R-2'],
      ['AR', ''],
      ['AE', 'R-4'],
      ['AA', 'R-5'],
    ],
  );
  t.match(result.messages[0]?.errors, [/ADT\^A08 is not a dispense message/]);
  t.match(result.messages[1]?.errors, [/no RXD segment/]);
  t.match(result.messages[2]?.errors, [/encoding characters/]);
  t.match(result.messages[3]?.errors, [/RXD-7 \(Rx number\) is missing; RXD-1 \(fill number\)/]);
});

t.test('timestamps: offsets honoured, MSH-7’s offset as the default, impossible dates refused', async (t) => {
  t.equal(parseHl7Timestamp('20260514102210')?.toISOString(), '2026-05-14T10:22:10.000Z');
  t.equal(parseHl7Timestamp('20260514102210-0500')?.toISOString(), '2026-05-14T15:22:10.000Z');
  t.equal(parseHl7Timestamp('202605141022', '+0200')?.toISOString(), '2026-05-14T08:22:00.000Z');
  t.equal(parseHl7Timestamp('20260514102210.25')?.toISOString(), '2026-05-14T10:22:10.250Z');
  t.equal(parseHl7Timestamp('20260230'), null);
  t.equal(parseHl7Timestamp('tomorrow'), null);
  t.equal(parseHl7Timestamp(''), null);
  t.equal(parseHl7Timestamp(' 2026 ')?.toISOString(), '2026-01-01T00:00:00.000Z', 'a year alone; white space around is not part of it');
  t.equal(
    parseHl7Timestamp('20260514102210.1239+0000')?.toISOString(),
    '2026-05-14T10:22:10.123Z',
    'a fourth fraction digit is below a millisecond',
  );
  t.equal(
    parseHl7Timestamp('20260514102210+0000', 'bad')?.toISOString(),
    '2026-05-14T10:22:10.000Z',
    'its own offset wins over the default',
  );
  t.equal(parseHl7Timestamp('20260101003000+0100')?.toISOString(), '2025-12-31T23:30:00.000Z', 'an offset can move the day and the year');
  t.equal(parseHl7Timestamp('20240229')?.toISOString(), '2024-02-29T00:00:00.000Z', 'a leap day');
  t.equal(parseHl7Timestamp('00000229')?.toISOString(), '0000-02-29T00:00:00.000Z', 'year 0 is a leap year too');
  t.equal(parseHl7Timestamp('00000301000000+0100')?.toISOString(), '0000-02-29T23:00:00.000Z');
  for (const impossible of [
    '20230229',
    '2026051424',
    '202605141060',
    '20260514102260',
    '20261301',
    '20260500',
    '202605141',
    '20260514102210.',
    '20260514102210.12345',
    '20260514102210+2400',
    '20260514102210+0060',
    '2026-05-14',
  ]) {
    t.equal(parseHl7Timestamp(impossible), null, `${impossible} is refused`);
  }
  t.equal(parseHl7Timestamp('20260514', '+99'), null, 'a malformed default offset is refused where it is needed');
});

t.test('carriers as the email names them', async (t) => {
  for (const [given, expected] of [
    ['UPS', 'UPS'],
    ['ups', 'UPS'],
    ['USPS', 'USPS'],
    ['U.S. Postal Service', 'USPS'],
    ['FedEx', 'FEDEX'],
    ['Fed Ex', 'FEDEX'],
    ['Federal Express', 'FEDEX'],
    ['dhl', 'DHL'],
    ['OnTrac', 'ONTRAC'],
    ['', 'UNK'],
    ['  ', 'UNK'],
    [undefined, 'UNK'],
  ] as const) {
    t.equal(normaliseCarrier(given), expected, `${JSON.stringify(given)} → ${expected}`);
  }
});

t.test('an ACK echoes the message type’s trigger, the control id and the version', async (t) => {
  const [message] = messagesOf([msh('A^1', 'RDS^O13^RDS_O13'), pid, rxd('109', '1Z7')].join('\r'));
  const ack = buildAck({ header: message?.header, code: 'AE', text: 'a|b', controlId: '9-1', now: new Date('2026-05-14T16:05:12Z') });
  t.equal(ack, 'MSH|^~\\&|RX-TRACKING-EMAIL|VA|CMOP|521|20260514160512+0000||ACK^O13^ACK|9-1|P|2.5\rMSA|AE|A^1|a\\F\\b\r');
});

t.test('an AR for a message whose MSH-2 cannot be read echoes its MSH-10, read by splitting on MSH-1', async (t) => {
  const now = new Date('2026-05-14T16:05:12Z');
  const ackOf = (body: string) => {
    const [message] = messagesOf(body);
    t.equal(message?.ack, 'AR');
    return buildAck({ header: message?.header, code: 'AR', text: message?.errors.join('; ') ?? '', controlId: '9-1', now });
  };
  t.equal(
    ackOf('MSH|~^&|PSO|521|MHV|MHV|20260514||RRD~O14|BAD-1|T|2.4\rPID|||1000000123V456789~~~USVHA~NI'),
    'MSH|^~\\&|RX-TRACKING-EMAIL|VA|PSO|521|20260514160512+0000||ACK^ACK|9-1|T|2.4\r' +
      'MSA|AR|BAD-1|MSH-2 must hold the four encoding characters (component, repetition, escape, subcomponent)\r',
    'three encoding characters: answered in the standard ones, MSH-10 in MSA-2',
  );
  t.match(
    ackOf('MSH#^~\\#CMOP#521#MHV#MHV#20260514##RDS^O13#BAD-2#P#2.5\rPID###1012345678V123456^^^USVHA^NI'),
    /\rMSA\|AR\|BAD-2\|MSH-2 must hold/,
    '`#` as MSH-1',
  );
  t.match(
    ackOf('MSH|^^\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|BAD-3|P|2.5'),
    /\rMSA\|AR\|BAD-3\|MSH-1\/MSH-2 encoding characters must be distinct/,
    'encoding characters repeated',
  );
  t.match(
    ackOf('MSH#^~\\#CMOP#521#MHV#MHV#20260514##RDS^O13#B|4^x\\y&z#P#2.5'),
    /\rMSA\|AR\|B\\F\\4\\S\\x\\E\\y\\T\\z\|/,
    'MSH-10 as sent, escaped for the ACK',
  );
});
