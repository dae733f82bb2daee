// Ingest bodies of just under the 5 MiB body limit: one of what CMOP sends, and the ones that cost
// the most memory or CPU per byte.
import { readFileSync } from 'node:fs';
const readSample = (f: string) => readFileSync(new URL(`../../samples/${f}`, import.meta.url), 'utf8');
const limit = 5 * 1024 * 1024;

/** `unit(i)` repeated until the body is just under the ingest body limit. */
function fill(head: string, unit: (i: number) => string, tail = ''): Buffer {
  const parts = [head];
  let length = head.length + tail.length;
  for (let i = 0; ; i++) {
    const piece = unit(i);
    if (length + piece.length > limit) break;
    parts.push(piece);
    length += piece.length;
  }
  parts.push(tail);
  return Buffer.from(parts.join(''));
}

const o13 = readSample('rds-o13-one-package-two-rx.hl7')
  .split(/\r\n|\r|\n/)
  .filter((l) => l !== '')
  .slice(0, 5)
  .join('\r');
/** The first is real messages; the others are pathological. */
export const bodies: { name: string; type: string; body: Buffer }[] = [
  // What CMOP sends, as many messages as fit: each a dispense to store.
  {
    name: 'real messages',
    type: 'application/hl7-v2',
    body: fill('', (i) => `${o13.replaceAll('2719043', String(3_000_000 + i)).replace('CMOP-260514-000101', `OV-${i}`)}\r`),
  },
  // The costliest per byte: a segment line per two bytes, a message (and an ACK) per 30 bytes, a
  // dispense per 25 bytes, a JSON event per 3 bytes, an identifier repetition per byte.
  {
    name: 'segment lines',
    type: 'application/hl7-v2',
    body: fill('MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|LINES-1|P|2.5\r', () => 'Z\r'),
  },
  { name: 'tiny messages', type: 'application/hl7-v2', body: fill('', (i) => `MSH|^~\\&|||||||RDS^O13|${i}\r`) },
  {
    name: 'dispenses in one message',
    type: 'application/hl7-v2',
    body: fill(
      'MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|RXD-1|P|2.5\rPID|||1012345678V123456^^^USVHA^NI\r',
      (i) => `RXD|1||||||${i}|||||||T${i}\r`,
    ),
  },
  { name: 'JSON events', type: 'application/json', body: fill('[{}', () => ',{}', ']') },
  {
    name: 'PID repetitions',
    type: 'application/hl7-v2',
    body: fill('MSH|^~\\&|CMOP|521|MHV|MHV|20260514||RDS^O13|REP-1|P|2.5\rPID|||', () => '~', '\rRXD|1||||||1|||||||T1\r'),
  },
];
