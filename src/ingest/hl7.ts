// The HL7 v2 adapter: turns a request body into one result per message (dispense records, or the
// reason the message could not be used) and builds the ACKs that answer them. It never throws: a
// body is data from outside, and every failure becomes a result with a reason.
//
// Splitting a body into messages (batch envelopes, CR/LF/CRLF, MLLP frames) is done here; reading
// fields, with the encoding characters of each message's MSH-1/MSH-2 and its escape sequences
// decoded, is done by hl7-reader.ts. The service reads fields itself rather than through an HL7
// library: a general library loads every HL7 table and builds a tree of every message, while
// ingest reads a dozen components per message, and the heap is capped (see docs/benchmarks.md).
//
// node-hl7-client stays as a test-only oracle: test/ingest/hl7-oracle.test.ts generates messages
// with random encoding characters (VistA's `~^\&` among them), repetitions, components,
// subcomponents and escape sequences, and checks that every field and component this adapter reads
// comes out as the library reads it and as exactly the value the generator encoded. Where the two
// differ on purpose: malformed \X..\ sequences and \X00\ (hl7-reader.ts says why), and a U+2028 or
// U+2029 inside a segment followed by `MSH|`, which the library takes for a second MSH: segments
// end at CR, LF, CRLF or an MLLP frame byte only, so it is read as text.
import { Hl7Segment, isFrameBreak, LineBreaks, lineContentStart, readEncoding, StandardEncoding, type Hl7Encoding } from './hl7-reader.ts';
import { calendarMillis } from '../instant.ts';
import { FieldLimits, isIcn, normaliseCarrier, normaliseNdc, type DispenseRecord } from './dispense.ts';

export type { Hl7Encoding };

export type AckCode = 'AA' | 'AE' | 'AR';

/** What the ACK needs from a message's MSH, as raw (still encoded) field text. */
export interface Hl7Header {
  encoding: Hl7Encoding;
  /** MSH-2 exactly as sent (four or five characters); `^~\&` when MSH-2 cannot be read. */
  encodingCharacters: string;
  sendingApplication: string;
  sendingFacility: string;
  /** MSH-9 decoded, components joined by `^`, e.g. `RDS^O13^RDS_O13`. */
  messageType: string;
  triggerEvent: string;
  /** MSH-10 raw: echoed unchanged in MSA-2. */
  controlId: string;
  processingId: string;
  version: string;
}

export interface Hl7MessageResult {
  /** Position of the message in the body, from 0. */
  index: number;
  /**
   * Undefined when MSH-1 could not be read. When only MSH-2 could not, what the ACK echoes, read by
   * splitting on MSH-1, in the standard encoding characters ({@link unreadableEncodingHeader}).
   */
  header: Hl7Header | undefined;
  dispenses: DispenseRecord[];
  /** Why the message (or one of its dispenses) could not be used; empty when all is well. */
  errors: string[];
  /** AA: every dispense usable; AE: read, but something could not be used; AR: not a usable message. */
  ack: AckCode;
}

export type Hl7BodyResult = { kind: 'hl7'; messages: Hl7MessageResult[]; notes: string[] } | { kind: 'not-hl7'; reason: string };

const CancelledOrderControls = new Set(['CA', 'CR', 'OC']);

/** True when the line starts a header segment (MSH, FHS, BHS) followed by a field separator. */
function isHeaderLine(line: string, name: string): boolean {
  return line.startsWith(name) && line.length > 3 && !/[A-Za-z0-9\s]/.test(line[3]!);
}

/** True for the lines of an FHS/BHS/BTS/FTS batch envelope. */
function isBatchLine(line: string): boolean {
  return line.startsWith('BTS') || line.startsWith('FTS') || isHeaderLine(line, 'FHS') || isHeaderLine(line, 'BHS');
}

/** The white space before a line's first character; JavaScript counts a byte-order mark as white space. */
const LeadingSpace = /\s*/y;

/**
 * Splits a body into its messages' segment lines: accepts CR, LF or CRLF between segments, MLLP
 * frames (one around the body, or several back to back, with or without a CR after each FS), a
 * byte-order mark, and FHS/BHS/BTS/FTS batch envelopes (dropped: their content describes the file,
 * not a dispense). A frame byte ends the message it is in (LineBreaks says why): lines after it and
 * before the next MSH are ignored, as lines before the first MSH are. The body is scanned, not split:
 * each line is cut out once, without its leading white space, and blank lines not at all.
 */
export function splitMessages(
  body: string,
  limits: BodyLimits = Unlimited,
): { messages: string[][]; ignoredLines: number; overLimit?: string } {
  const messages: string[][] = [];
  let current: string[] | undefined;
  let ignoredLines = 0;
  let lines = 0;
  let dispenses = 0;
  const lineBreaks = new LineBreaks(body);
  for (let start = 0; start <= body.length; ) {
    const end = lineBreaks.lineEnd(start);
    const from = lineContentStart(body, start, end, LeadingSpace);
    start = lineBreaks.nextStart(end);
    if (from !== end) {
      // Counted before a line is cut out, so that a body past a limit costs no more than the limit.
      if (++lines > limits.maxSegments) return { messages: [], ignoredLines, overLimit: `more than ${limits.maxSegments} segments` };
      if (body.startsWith('RXD', from) && ++dispenses > limits.maxRecords) {
        return { messages: [], ignoredLines, overLimit: `more than ${limits.maxRecords} RXD segments (dispenses)` };
      }
      const line = body.slice(from, end);
      if (isBatchLine(line)) {
        current = undefined;
      } else if (isHeaderLine(line, 'MSH')) {
        if (messages.length >= limits.maxRecords)
          return { messages: [], ignoredLines, overLimit: `more than ${limits.maxRecords} messages` };
        current = [line];
        messages.push(current);
      } else if (current) {
        current.push(line);
      } else {
        ignoredLines++;
      }
    }
    if (isFrameBreak(body, end)) current = undefined;
  }
  return { messages, ignoredLines };
}

/**
 * What one body may hold. The memory a body costs grows with its messages, dispenses and segment
 * lines far more than with its bytes (a 30-byte message costs about a kilobyte until it is
 * answered), so a body is bounded by those: one of 5 MiB of tiny messages took the whole heap.
 */
export interface BodyLimits {
  /** INGEST_MAX_RECORDS_PER_BODY: messages, and dispenses (RXD segments). */
  maxRecords: number;
  /** Segment lines of any kind. */
  maxSegments: number;
}

/** Segment lines a body may hold per record it may hold: a CMOP message has five or six. */
const SegmentsPerRecord = 10;

const Unlimited: BodyLimits = { maxRecords: Number.POSITIVE_INFINITY, maxSegments: Number.POSITIVE_INFINITY };

/** The limits that follow from INGEST_MAX_RECORDS_PER_BODY. */
export function bodyLimits(maxRecords: number): BodyLimits {
  return { maxRecords, maxSegments: maxRecords * SegmentsPerRecord };
}

/**
 * Escapes a value for one HL7 field component with the given encoding characters, so that the
 * receiver decodes exactly the value (delimiters as \F\ \S\ \T\ \R\ \E\, line breaks as \X0D\ and
 * \X0A\: a raw CR would end the segment).
 */
export function escapeHl7(value: string, encoding: Hl7Encoding = StandardEncoding): string {
  // Most values (control ids, trigger events, "accepted") hold nothing to escape: checked first, so
  // that a 1,000-message body's ACKs do not build a character table per value.
  if (!needsEscaping(value, encoding)) return value;
  const sequences = new Map<string, string>([
    [encoding.escape, 'E'],
    [encoding.field, 'F'],
    [encoding.component, 'S'],
    [encoding.subcomponent, 'T'],
    [encoding.repetition, 'R'],
    ['\r', 'X0D'],
    ['\n', 'X0A'],
  ]);
  let out = '';
  for (const ch of value) {
    const code = sequences.get(ch);
    out += code === undefined ? ch : `${encoding.escape}${code}${encoding.escape}`;
  }
  return out;
}

function needsEscaping(value: string, encoding: Hl7Encoding): boolean {
  return (
    value.includes(encoding.escape) ||
    value.includes(encoding.field) ||
    value.includes(encoding.component) ||
    value.includes(encoding.subcomponent) ||
    value.includes(encoding.repetition) ||
    value.includes('\r') ||
    value.includes('\n')
  );
}

/** The parts that are not empty, joined by `^` (a message type as MSH-9 names it). */
function joinPresent(code: string, event: string, structure: string): string {
  const join = (a: string, b: string) => (a === '' ? b : b === '' ? a : `${a}^${b}`);
  return join(join(code, event), structure);
}

/** Component `component` of field `n`'s first repetition, decoded and trimmed; '' without the segment. */
function value(segment: Hl7Segment | undefined, n: number, component = 1): string {
  return segment === undefined ? '' : segment.value(n, component);
}

// ---- Timestamps

/**
 * Parses an HL7 TS/DTM (`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][±ZZZZ]`). A value without an offset is read
 * in `defaultOffset` (the offset of the message's MSH-7 when it has one, else UTC): CMOP sends its
 * dispense times without one, and the message header is the sender's best statement of its zone.
 *
 * Read digit by digit, without a regular expression, an ISO string handed to `Date` or a substring
 * per part: every dispense carries one of these, so it is on ingest's hot path.
 */
export function parseHl7Timestamp(text: string, defaultOffset = '+0000'): Date | null {
  const value = text.trim();
  let end = value.length;
  let offsetMinutes: number | null;
  const sign = value[end - 5];
  if (end >= 5 && (sign === '+' || sign === '-')) {
    offsetMinutes = parseOffset(value, end - 5);
    end -= 5;
  } else {
    offsetMinutes = defaultOffset.length === 5 ? parseOffset(defaultOffset, 0) : null;
  }
  if (offsetMinutes === null) return null;
  const dot = value.indexOf('.');
  const digitsEnd = dot === -1 || dot >= end ? end : dot;
  // The date and time come in pairs of digits after the year; a fraction of 1 to 4 digits may follow.
  if (digitsEnd < 4 || digitsEnd > 14 || digitsEnd % 2 !== 0 || !allDigits(value, 0, digitsEnd)) return null;
  let milliseconds = 0;
  if (digitsEnd < end) {
    const fractionDigits = end - digitsEnd - 1;
    if (fractionDigits < 1 || fractionDigits > 4 || !allDigits(value, digitsEnd + 1, end)) return null;
    // Tenths, hundredths and thousandths; a fourth digit is below what a Date holds.
    for (let i = 0, scale = 100; i < 3; i++, scale /= 10) {
      if (i < fractionDigits) milliseconds += digitAt(value, digitsEnd + 1 + i) * scale;
    }
  }
  const pair = (from: number, fallback: number) => (from < digitsEnd ? digitAt(value, from) * 10 + digitAt(value, from + 1) : fallback);
  const year = pair(0, 0) * 100 + pair(2, 0);
  const month = pair(4, 1);
  const day = pair(6, 1);
  const hour = pair(8, 0);
  const minute = pair(10, 0);
  const second = pair(12, 0);
  // HL7's offsets run to ±23:59 (parseOffset), and its years from 0000; the calendar parts are
  // checked as everywhere else.
  const at = calendarMillis(
    { year, month, day, hour, minute, second, millisecond: milliseconds, offsetMinutes },
    { maxOffsetMinutes: 23 * 60 + 59, minYear: 0 },
  );
  return at === undefined ? null : new Date(at);
}

function digitAt(text: string, at: number): number {
  return text.charCodeAt(at) - 48;
}

function allDigits(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const code = text.charCodeAt(i);
    if (code < 48 || code > 57) return false;
  }
  return true;
}

/** `±HHMM` at `text[at]`, in minutes east of UTC; null unless the hours are 00–23 and the minutes 00–59. */
function parseOffset(text: string, at: number): number | null {
  const sign = text[at];
  if (text.length < at + 5 || (sign !== '+' && sign !== '-') || !allDigits(text, at + 1, at + 5)) return null;
  const hours = digitAt(text, at + 1) * 10 + digitAt(text, at + 2);
  const minutes = digitAt(text, at + 3) * 10 + digitAt(text, at + 4);
  if (hours > 23 || minutes > 59) return null;
  return (sign === '-' ? -1 : 1) * (hours * 60 + minutes);
}

function offsetOf(text: string): string | undefined {
  return /([+-]\d{4})$/.exec(text.trim())?.[1];
}

/**
 * MSH-7 read as a message's zone and date/time, remembered for the body's next message: the messages
 * of a batch carry the same MSH-7 (the samples' do), and reading it (two patterns and three Dates)
 * was a tenth of reading a message. Kept per body, not per module, so that it does not keep a body's
 * text alive after the body is answered.
 */
class MessageTimes {
  #text: string | undefined;
  #zone = '+0000';
  #time: number | null = null;

  /** Reads MSH-7 (`text`), unless it is the one read last. */
  read(text: string): void {
    if (text === this.#text) return;
    this.#zone = offsetOf(text) ?? '+0000';
    this.#time = parseHl7Timestamp(text, this.#zone)?.getTime() ?? null;
    this.#text = text;
  }

  /** The offset of the last MSH-7 read, '+0000' when it has none. */
  get zone(): string {
    return this.#zone;
  }

  /** The last MSH-7 read as a date/time, in a Date of the caller's own. */
  date(): Date | null {
    return this.#time === null ? null : new Date(this.#time);
  }
}

// ---- Patient identifiers

interface PatientIdentifiers {
  icn: string | null;
  mhvCorrelationId: string | null;
  icnProblem: string | null;
  /** Why the message's dispenses cannot be stored as sent: an identifier longer than it may be. */
  tooLong: string | null;
}

/** PID-3 repetitions read at most. */
const MaxPatientIdentifiers = 50;

function readPatient(pid: Hl7Segment | undefined): PatientIdentifiers {
  if (pid === undefined) return { icn: null, mhvCorrelationId: null, icnProblem: 'no PID segment, so no ICN', tooLong: null };
  let icn: string | null = null;
  let malformedIcn = false;
  let mhvCorrelationId: string | null = null;
  let tooLong: string | null = null;
  const identifiers = pid.repetitionCount(3);
  // Each repetition is found from the start of the field, so the count is capped: a veteran has a
  // handful of identifiers, and a field of millions of `~` would cost a scan of the field each.
  if (identifiers > MaxPatientIdentifiers) {
    return { icn: null, mhvCorrelationId: null, icnProblem: null, tooLong: `PID-3 holds more than ${MaxPatientIdentifiers} identifiers` };
  }
  for (let rep = 1, count = identifiers; rep <= count; rep++) {
    const id = pid.value(3, 1, 1, rep);
    if (id === '') continue;
    const authority = pid.value(3, 4, 1, rep).toUpperCase();
    const type = pid.value(3, 5, 1, rep).toUpperCase();
    if (type === 'NI' && authority === 'USVHA') {
      if (isIcn(id)) icn ??= id;
      else malformedIcn = true;
    } else if (type === 'PI' && authority === '200MHS') {
      if (id.length <= FieldLimits.mhvCorrelationId) mhvCorrelationId ??= id;
      else tooLong = `PID-3 (MHV correlation id, PI/200MHS) is longer than ${FieldLimits.mhvCorrelationId} characters`;
    }
  }
  // Older CMOP orders carry the ICN in PID-17 instead of PID-3.
  if (icn === null) {
    const legacy = value(pid, 17);
    if (isIcn(legacy)) icn = legacy;
  }
  let icnProblem: string | null = null;
  if (icn === null) {
    icnProblem = malformedIcn
      ? 'the ICN in PID-3 (NI/USVHA) is not in the form 1234567890V123456'
      : 'no ICN (PID-3 with type NI and authority USVHA, or PID-17): VA Notify is addressed by ICN';
  }
  return { icn, mhvCorrelationId, icnProblem, tooLong };
}

// ---- Station

/** A VA station number: three digits and an optional division suffix (521, 528A6). */
const StationPattern = /^\d{3}[A-Z0-9]{0,2}$/;

/**
 * The dispensing station: MSH-4 when the sending facility is a station number (VistA's pharmacy
 * interface sends `521`), else the first part of a CMOP order number `STATION-RX-FILL` in ORC-2
 * whose Rx part is this Rx (CMOP fills put the station there; MSH-4 is CMOP's own name).
 */
function readStation(msh: Hl7Segment | undefined, orc: Hl7Segment | undefined, rxNumber: string): string {
  const facility = value(msh, 4);
  if (StationPattern.test(facility)) return facility;
  const order = value(orc, 2);
  const stationEnd = order.indexOf('-');
  if (stationEnd < 1 || stationEnd > FieldLimits.stationNumber) return '';
  const station = order.slice(0, stationEnd);
  if (!/^[A-Za-z0-9]+$/.test(station)) return '';
  if (rxNumber !== '') {
    // The Rx part: what lies between the first two hyphens (or to the end).
    const rxEnd = order.indexOf('-', stationEnd + 1);
    if (order.slice(stationEnd + 1, rxEnd === -1 ? order.length : rxEnd) !== rxNumber) return '';
  }
  return station;
}

// ---- One message

interface OrderGroup {
  orc: Hl7Segment | undefined;
  rxd: Hl7Segment;
  zr2: Hl7Segment | undefined;
}

const SupportedMessageCodes = new Set(['RDS', 'RRD']);

function reject(index: number, header: Hl7Header | undefined, error: string): Hl7MessageResult {
  return { index, header, dispenses: [], errors: [error], ack: 'AR' };
}

/**
 * The header of a message whose MSH-2 cannot be read, for its AR: MSH-1 is known (the splitter takes
 * a line for a header only then), so MSH-10 is found by splitting on it, and the sender can match
 * the AR to its message. The message's own encoding characters are not known, so the ACK is written
 * in the standard ones, each echoed field escaped for them: the sender reads back the text it sent
 * between its separators. Undefined when MSH-1 is not usable either.
 */
function unreadableEncodingHeader(headerLine: string): Hl7Header | undefined {
  if (!isHeaderLine(headerLine, 'MSH')) return undefined;
  const fields = headerLine.split(headerLine[3]!, 12);
  // fields[0] is `MSH` and MSH-1 is the separator itself, so MSH-n is fields[n - 1].
  const asSent = (n: number) => escapeHl7(fields[n - 1] ?? '', StandardEncoding);
  return {
    encoding: StandardEncoding,
    encodingCharacters: '^~\\&',
    sendingApplication: asSent(3),
    sendingFacility: asSent(4),
    messageType: '',
    triggerEvent: '',
    controlId: asSent(10),
    processingId: asSent(11),
    version: asSent(12),
  };
}

/**
 * Where the message's first segment with a raw NUL (U+0000) is, as the reason to refuse it; null
 * when none has one. Postgres text cannot hold a NUL: one in a stored value failed the insert of
 * the whole body, so the message is refused on its own, whichever segment holds it (the sender's
 * text is not what it meant to send).
 */
function nulProblem(lines: readonly string[]): string | null {
  const at = lines.findIndex((line) => line.includes('\0'));
  if (at === -1) return null;
  const name = lines[at]!.slice(0, 3);
  return `segment ${at + 1}${/^[A-Z][A-Z0-9]{2}$/.test(name) ? ` (${name})` : ''} holds a NUL character (U+0000), which cannot be stored`;
}

/**
 * Parses one message's segment lines; `times` carries MSH-7 from a body's previous message. Never
 * throws. `mayHoldNul` false says the body holds no NUL, so its lines are not searched for one.
 */
export function parseHl7Message(lines: string[], index = 0, times = new MessageTimes(), mayHoldNul = true): Hl7MessageResult {
  const headerLine = lines[0] ?? '';
  const read = readEncoding(headerLine);
  if ('error' in read) return reject(index, unreadableEncodingHeader(headerLine), read.error);
  const { encoding, characters } = read;
  const msh = new Hl7Segment(headerLine.trimEnd(), encoding);
  // The ACK's echo of MSH fields is of the line as sent.
  const mshAsSent = msh.text === headerLine ? msh : new Hl7Segment(headerLine, encoding);
  const header: Hl7Header = {
    encoding,
    encodingCharacters: characters,
    sendingApplication: mshAsSent.raw(3),
    sendingFacility: mshAsSent.raw(4),
    messageType: '',
    triggerEvent: '',
    controlId: mshAsSent.raw(10),
    processingId: mshAsSent.raw(11),
    version: mshAsSent.raw(12),
  };
  const nul = mayHoldNul ? nulProblem(lines) : null;
  if (nul !== null) return reject(index, header, nul);
  try {
    return readDispenseMessage(msh, lines, index, header, times);
  } catch (error) {
    // Hl7ReadError: a field that is read holds an escape sequence that cannot be decoded, so the
    // message cannot be read as sent; the ACK names the field, never its text. Anything else is
    // caught too, because this function must not throw on a body from outside.
    return reject(index, header, `the message could not be parsed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function readDispenseMessage(msh: Hl7Segment, lines: string[], index: number, header: Hl7Header, times: MessageTimes): Hl7MessageResult {
  const code = value(msh, 9, 1).toUpperCase();
  header.triggerEvent = value(msh, 9, 2).toUpperCase();
  header.messageType = joinPresent(code, header.triggerEvent, value(msh, 9, 3));
  const missing: string[] = [];
  if (code === '') missing.push('MSH-9 (message type)');
  if (header.controlId.trim() === '') missing.push('MSH-10 (message control id)');
  if (missing.length > 0) return reject(index, header, `${missing.join(' and ')} missing: the message is incomplete`);
  if (value(msh, 10).length > FieldLimits.messageControlId) {
    return {
      index,
      header,
      dispenses: [],
      errors: [`MSH-10 (message control id) is longer than ${FieldLimits.messageControlId} characters`],
      ack: 'AE',
    };
  }
  if (!SupportedMessageCodes.has(code)) {
    return reject(index, header, `message type ${header.messageType} is not a dispense message (expected RDS^R06, RDS^O13 or RRD^O14)`);
  }

  let pid: Hl7Segment | undefined;
  let orc: Hl7Segment | undefined;
  const groups: OrderGroup[] = [];
  // Only the segments that are read become Hl7Segments; NTE, PV1, MSA and other Z-segments are
  // tolerated, not needed. White space at the end of a segment is not part of its last field (as
  // node-hl7-client read it, so a field of spaces there is absent).
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('PID')) {
      pid ??= new Hl7Segment(line.trimEnd(), msh.encoding);
    } else if (line.startsWith('ORC')) {
      orc = new Hl7Segment(line.trimEnd(), msh.encoding);
    } else if (line.startsWith('RXD')) {
      groups.push({ orc, rxd: new Hl7Segment(line.trimEnd(), msh.encoding), zr2: undefined });
    } else if (line.startsWith('ZR2')) {
      const last = groups.at(-1);
      if (last && last.zr2 === undefined) last.zr2 = new Hl7Segment(line.trimEnd(), msh.encoding);
    }
  }
  if (groups.length === 0) {
    return { index, header, dispenses: [], errors: ['no RXD segment: the message reports no dispense'], ack: 'AE' };
  }

  const patient = readPatient(pid);
  times.read(value(msh, 7));
  const zone = times.zone;
  // No HL7 shape here has a shipped-at field. The message is CMOP's report that the fill left the
  // pharmacy (R06 is the fulfillment file sent after packing; O13/O14 report the dispense with its
  // tracking number), so the message's own date/time, MSH-7, is the closest honest shipped-at.
  const messageTime = times.date();
  const isR06 = header.triggerEvent === 'R06';

  const dispenses: DispenseRecord[] = [];
  const errors: string[] = [];
  groups.forEach((group, groupIndex) => {
    const where = groups.length > 1 ? `RXD ${groupIndex + 1} of ${groups.length}: ` : '';
    const rxNumber = value(group.rxd, 7) || value(group.zr2, 3);
    const fillText = value(group.rxd, 1);
    const problems: string[] = [];
    if (rxNumber === '') problems.push('RXD-7 (Rx number) is missing');
    if (!/^\d{1,4}$/.test(fillText)) problems.push('RXD-1 (fill number) is missing or not a number');
    // R06 carries the tracking number in ZR2-2; the pharmacy interface's O13/O14 in RXD-13.
    const tracking = isR06 ? value(group.zr2, 2) || value(group.rxd, 13) : value(group.rxd, 13) || value(group.zr2, 2);
    const carrierText = value(group.zr2, 1);
    const drugName = value(group.rxd, 2, 2);
    // Each value is bounded as the JSON schema bounds it (FieldLimits says why); the reason names
    // the field, never its text.
    const tooLong = (field: string, text: string, limit: number) => {
      if (text.length > limit) problems.push(`${field} is longer than ${limit} characters`);
    };
    tooLong('RXD-7 (Rx number)', rxNumber, FieldLimits.rxNumber);
    tooLong(isR06 ? 'ZR2-2 (tracking number)' : 'RXD-13 (tracking number)', tracking, FieldLimits.trackingNumber);
    tooLong('ZR2-1 (carrier)', carrierText, FieldLimits.carrier);
    tooLong('RXD-2.2 (drug name)', drugName, FieldLimits.drugName);
    if (patient.tooLong !== null) problems.push(patient.tooLong);
    if (problems.length > 0) {
      errors.push(where + problems.join('; '));
      return;
    }
    const orderControl = value(group.orc, 1).toUpperCase();
    const cancelled = CancelledOrderControls.has(orderControl);
    const quantityText = value(group.rxd, 4);
    // A quantity is a count of units: a longer number is no quantity anyone dispensed.
    const quantity = quantityText.length <= 12 && /^\d+(\.\d+)?$/.test(quantityText) ? Number(quantityText) : null;
    const codingSystem = value(group.rxd, 2, 3).toUpperCase();
    const stationNumber = readStation(msh, group.orc, rxNumber);

    const dispense: DispenseRecord = {
      stationNumber,
      rxNumber,
      fillNumber: Number(fillText),
      trackingNumber: tracking,
      carrier: normaliseCarrier(carrierText),
      drugName: drugName || null,
      ndc: codingSystem === 'NDC' ? normaliseNdc(value(group.rxd, 2, 1)) : null,
      quantity,
      dispensedAt: parseHl7Timestamp(value(group.rxd, 3), zone),
      shippedAt: cancelled ? null : messageTime,
      veteranIcn: patient.icn,
      mhvCorrelationId: patient.mhvCorrelationId,
      messageControlId: value(msh, 10) || header.controlId,
      state: 'pending',
      stateReason: null,
    };
    if (cancelled) {
      const reason = value(group.rxd, 9);
      dispense.state = 'cancelled';
      const shown = reason.length > FieldLimits.drugName ? `${reason.slice(0, FieldLimits.drugName)}…` : reason;
      dispense.stateReason = `cancelled by CMOP (ORC-1 ${orderControl.slice(0, 10)})${shown === '' ? '' : `: ${shown}`}`;
    } else {
      const unusable: string[] = [];
      if (patient.icnProblem) unusable.push(patient.icnProblem);
      if (stationNumber === '') unusable.push('no station number (MSH-4 or ORC-2 STATION-RX-FILL)');
      if (tracking === '') unusable.push(`no tracking number (${isR06 ? 'ZR2-2' : 'RXD-13 or ZR2-2'})`);
      if (unusable.length > 0) {
        dispense.state = 'unprocessable';
        dispense.stateReason = unusable.join('; ');
        errors.push(where + dispense.stateReason);
      }
    }
    dispenses.push(dispense);
  });
  return { index, header, dispenses, errors, ack: errors.length === 0 ? 'AA' : 'AE' };
}

/** Parses a whole request body. Never throws. */
export function parseHl7Body(body: string, limits: BodyLimits = Unlimited): Hl7BodyResult {
  try {
    const { messages, ignoredLines, overLimit } = splitMessages(body, limits);
    if (overLimit !== undefined) {
      return { kind: 'not-hl7', reason: `the body holds ${overLimit}: send at most ${limits.maxRecords} messages or dispenses per body` };
    }
    if (messages.length === 0) {
      return { kind: 'not-hl7', reason: 'the body holds no HL7 v2 message (no MSH segment)' };
    }
    const notes = ignoredLines > 0 ? [`${ignoredLines} line(s) before the first MSH were ignored`] : [];
    const times = new MessageTimes();
    // One search of the body, rather than of each of its lines: a NUL is rare.
    const mayHoldNul = body.includes('\0');
    return { kind: 'hl7', messages: messages.map((lines, index) => parseHl7Message(lines, index, times, mayHoldNul)), notes };
  } catch (error) {
    return { kind: 'not-hl7', reason: `the body could not be read as HL7 v2: ${error instanceof Error ? error.message : String(error)}` };
  }
}

// ---- Acknowledgements

/** HL7 DTM in UTC with an explicit offset, so no receiver has to guess our zone. */
export function formatHl7Timestamp(date: Date): string {
  // A body's ACKs all carry the same time: the last one formatted is kept.
  if (date.getTime() === lastFormatted.time) return lastFormatted.text;
  const iso = date.toISOString();
  const text = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}+0000`;
  lastFormatted = { time: date.getTime(), text };
  return text;
}

let lastFormatted = { time: Number.NaN, text: '' };

export interface AckInput {
  /** The acknowledged message's header; undefined for a body that was not HL7. */
  header: Hl7Header | undefined;
  code: AckCode;
  text: string;
  /** This ACK's own MSH-10. */
  controlId: string;
  now: Date;
}

/**
 * One ACK message (MSH + MSA), in the acknowledged message's own encoding characters so that the
 * sender's parser reads it as it writes; MSA-2 is that message's MSH-10, unchanged.
 */
export function buildAck({ header, code, text, controlId, now }: AckInput): string {
  const encoding = header?.encoding ?? StandardEncoding;
  const characters = header?.encodingCharacters.slice(0, 4) ?? '^~\\&';
  const f = encoding.field;
  const c = encoding.component;
  // ACK^R06^ACK, or ACK^ACK when the message named no trigger event. Written as one template, not
  // arrays joined: a 1,000-message body builds a thousand of these.
  const messageType = header?.triggerEvent ? `ACK${c}${escapeHl7(header.triggerEvent, encoding)}${c}ACK` : `ACK${c}ACK`;
  const msh =
    `MSH${f}${characters}${f}RX-TRACKING-EMAIL${f}VA${f}${header?.sendingApplication ?? ''}${f}${header?.sendingFacility ?? ''}` +
    `${f}${formatHl7Timestamp(now)}${f}${f}${messageType}${f}${escapeHl7(controlId, encoding)}${f}${header?.processingId || 'P'}` +
    `${f}${header?.version || '2.5'}`;
  const msa = `MSA${f}${code}${f}${header?.controlId ?? ''}${f}${escapeHl7(text, encoding)}`;
  return `${msh}\r${msa}\r`;
}
