// The service never stores an SSN. Request bodies are kept "as received, SSNs masked": this module
// does the masking, on the raw text and before anything is parsed or stored, so that a body that
// fails to parse is masked too. Everything else in the body is left byte for byte as it came.
import { isFrameBreak, LineBreaks, lineContentStart, pieceEnd, pieceStart, readEncoding, type Hl7Encoding } from './hl7-reader.ts';

const Mask = 'XXXXXXXXX';

/** Identifiers PID-3 may keep: the ICN, the MHV correlation id and the local DFN. */
function isKeptIdentifier(type: string, authority: string): boolean {
  return (type === 'NI' && authority === 'USVHA') || (type === 'PI' && (authority === '200MHS' || authority === 'USVHA'));
}

/** Puts the mask in place of body[from, to); calls come in the order of the body. */
type MaskRange = (from: number, to: number) => void;

/** The first subcomponent of component `index` (from 0) of body[start, end), trimmed and uppercased. */
function componentCode(body: string, enc: Hl7Encoding, index: number, start: number, end: number): string {
  const from = pieceStart(body, enc.component, index, start, end);
  if (from === -1) return '';
  const to = pieceEnd(body, enc.subcomponent, from, pieceEnd(body, enc.component, from, end));
  return body.slice(from, to).trim().toUpperCase();
}

/** What becomes of a repetition's identifier (first component): masked whole, kept whole, or searched for SSN shapes. */
type IdentifierRule = (type: string, authority: string) => 'mask' | 'keep' | 'search';

/**
 * Masks each repetition of body[start, end) by `rule`; SSN shapes in its other components (an SSN
 * as a check digit or a second id of the ICN's repetition) are masked whatever the rule.
 */
function maskRepetitions(body: string, start: number, end: number, enc: Hl7Encoding, rule: IdentifierRule, maskRange: MaskRange): void {
  for (let from = start; ; from += enc.repetition.length) {
    const to = pieceEnd(body, enc.repetition, from, end);
    const idEnd = pieceEnd(body, enc.component, from, to);
    const fate = idEnd > from ? rule(componentCode(body, enc, 4, from, to), componentCode(body, enc, 3, from, to)) : 'search';
    if (fate === 'mask') maskRange(from, idEnd);
    maskSsnShapes(body, fate === 'search' ? from : idEnd, to, maskRange);
    if (to === end) return;
    from = to;
  }
}

const pid3Rule: IdentifierRule = (type, authority) => (isKeptIdentifier(type, authority) ? 'keep' : 'mask');
const ssnTypedRule: IdentifierRule = (type) => (type === 'SS' ? 'mask' : 'search');

const isDigitCode = (code: number) => code >= 48 && code <= 57;

/**
 * Masks every SSN shape in body[start, end): nine digits with no digit beside them, as `ddddddddd`
 * or `ddd dd dddd` (`ddd-dd-dddd` is masked anywhere by maskPatterns). A longer run of digits (an
 * ICN's ten, a tracking number) is no SSN and is left as it is. Used on the fields and segments the
 * service does not read, so nothing it needs can be masked; the scan looks at each character once.
 */
function maskSsnShapes(body: string, start: number, end: number, maskRange: MaskRange): void {
  for (let i = start; i < end; i++) {
    if (!isDigitCode(body.charCodeAt(i)) || (i > start && isDigitCode(body.charCodeAt(i - 1)))) continue;
    let run = i;
    while (run < end && isDigitCode(body.charCodeAt(run))) run++;
    const length = run - i;
    if (length === 9) {
      maskRange(i, run);
    } else if (
      length === 3 &&
      body[run] === ' ' &&
      digitsAt(body, run + 1, 2, end) &&
      body[run + 3] === ' ' &&
      digitsAt(body, run + 4, 4, end)
    ) {
      const last = run + 8;
      if (last >= end || !isDigitCode(body.charCodeAt(last))) {
        maskRange(i, last);
        run = last;
      }
    }
    i = run;
  }
}

/** True when body[at, at + count) are digits and the digit run ends there, all before `end`. */
function digitsAt(body: string, at: number, count: number, end: number): boolean {
  if (at + count > end) return false;
  for (let k = at; k < at + count; k++) if (!isDigitCode(body.charCodeAt(k))) return false;
  return at + count === end || !isDigitCode(body.charCodeAt(at + count));
}

/**
 * Masks the PID fields that carry SSNs: every PID-3 repetition that is not the ICN (NI/USVHA), the
 * MHV correlation id (PI/200MHS) or the DFN (PI/USVHA), including ones without a type code (R06
 * sends `666009876^4^M11`); PID-2 and PID-4 repetitions typed SS; and PID-19 (SSN). The segment is
 * body[start, end): its fields are found in place, so a PID with nothing to mask costs no strings
 * but the type codes and authorities of PID-2 to PID-4.
 */
function maskPid(body: string, start: number, end: number, enc: Hl7Encoding, maskRange: MaskRange): void {
  for (let n = 0, from = start; ; n++, from += enc.field.length) {
    const to = pieceEnd(body, enc.field, from, end);
    if (n === 3) maskRepetitions(body, from, to, enc, pid3Rule, maskRange);
    else if (n === 2 || n === 4) maskRepetitions(body, from, to, enc, ssnTypedRule, maskRange);
    else if (n === 19 && to > from) maskRange(from, to);
    // Every other field (a name, an address, a phone number, PID-17's legacy ICN) is searched for
    // an SSN shape: only PID-3 and PID-17 are read, and neither identifier is nine digits.
    else if (n > 0) maskSsnShapes(body, from, to, maskRange);
    if (to === end) return;
    from = to;
  }
}

/** The segments ingest reads fields of; any other (GT1, NK1, IN1, IN2, NTE, Z-segments) is searched whole for SSN shapes. */
const ReadSegments = new Set(['MSH', 'PID', 'ORC', 'RXD', 'ZR2', 'FHS', 'BHS', 'BTS', 'FTS', 'MSA']);

/** True when body[at] starts a segment: a three-character name, then a character that is not a letter, digit or space. */
function isSegmentStart(body: string, at: number, end: number): boolean {
  return at + 3 < end && /^[A-Z][A-Z0-9]{2}$/.test(body.slice(at, at + 3)) && !/[A-Za-z0-9\s]/.test(body[at + 3]!);
}

/**
 * Masks every run of nine or more digits in body[start, end): the PID lines under a header whose
 * encoding characters cannot be read, or under no header (maskHl7 says where that is). Such a
 * header's delimiters are not known, and neither is its
 * MSH-1 to be trusted: `MSH^~\&|…` (MSH-1 left out) reads as field separator `^`, and PID fields cut
 * at `^` would miss the SSN in `PID|||666001234^^^USSSA^SS`. An SSN is nine digits whichever
 * delimiters the sender meant; a longer run is masked whole, in case the broken header made a digit
 * a delimiter beside it; written `ddd-dd-dddd` it is masked anywhere by maskPatterns. What else this
 * masks (an ICN's ten digits, a phone number, a date and time) is in a message that is answered AR,
 * or in lines the splitter ignores, and yields no dispense, so nothing the service uses is lost.
 */
function maskDigitRuns(body: string, start: number, end: number, maskRange: MaskRange): void {
  let runStart = -1;
  for (let i = start; i <= end; i++) {
    const code = i < end ? body.charCodeAt(i) : -1;
    if (code >= 48 && code <= 57) {
      if (runStart === -1) runStart = i;
    } else if (runStart !== -1) {
      if (i - runStart >= 9) maskRange(runStart, i);
      runStart = -1;
    }
  }
}

/** What may precede a segment name on its line: white space and a byte-order mark, as for the splitter. */
const LeadingNoise = /\s*/y;

/**
 * Masks SSNs in HL7 segments, honouring the encoding characters of each MSH (or FHS/BHS) header;
 * under a header whose encoding characters cannot be read, or under none, by {@link maskDigitRuns}.
 * Lines and messages end where the splitter (splitMessages in hl7.ts) ends them, at CR, LF, CRLF
 * and MLLP's VT and FS, so that each PID is masked with the delimiters of the header it is parsed
 * under. The body is scanned, not split: only header lines are cut out of it, and a 1,000-message
 * file comes back as the same string when it holds nothing to mask.
 */
function maskHl7(body: string): string {
  // Undefined before the first header, after an MLLP frame ends, and after a header whose encoding
  // characters cannot be read, until a header that can be read. A PID line in the first two places
  // is ignored by the splitter, and its delimiters are as unknown as under an unreadable header: one
  // in a frame of its own after a VistA message is `PID|||…~~~USVHA~NI^666001234~~~USSSA~SS`, whose
  // SSN the standard delimiters would not find.
  let encoding: Hl7Encoding | undefined;
  let masked = '';
  let copiedTo = 0;
  const maskRange: MaskRange = (from, to) => {
    // Masked already: left as it is, so that a body with nothing left to mask comes back unchanged.
    if (to - from === Mask.length && body.startsWith(Mask, from)) return;
    masked += body.slice(copiedTo, from) + Mask;
    copiedTo = to;
  };
  const lineBreaks = new LineBreaks(body);
  for (let start = 0; start <= body.length; ) {
    const end = lineBreaks.lineEnd(start);
    const at = lineContentStart(body, start, end, LeadingNoise);
    start = lineBreaks.nextStart(end);
    // A line of noise only has nothing to mask or read.
    if (at !== end && body.startsWith('PID', at)) {
      if (encoding === undefined) maskDigitRuns(body, at, end, maskRange);
      else if (body[at + 3] === encoding.field) maskPid(body, at, end, encoding, maskRange);
    } else if (at !== end && !ReadSegments.has(body.slice(at, at + 3)) && isSegmentStart(body, at, end)) {
      maskSsnShapes(body, at, end, maskRange);
    } else if (at !== end && (body.startsWith('MSH', at) || body.startsWith('FHS', at) || body.startsWith('BHS', at))) {
      // Also when MSH-1 is a letter, a digit or a space, which the parser reads as a segment of the
      // message before, not as a header: the delimiters of the PID lines that follow are as unknown,
      // and in a message that malformed, masking too much is the safe way to be wrong.
      const read = readEncoding(body.slice(at, end));
      encoding = 'error' in read ? undefined : read.encoding;
    }
    if (isFrameBreak(body, end)) encoding = undefined;
  }
  return copiedTo === 0 ? body : masked + body.slice(copiedTo);
}

/** `ddd-dd-dddd` anywhere, and JSON properties named like an SSN. */
function maskPatterns(body: string): string {
  return body
    .replace(/(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)/g, 'XXX-XX-XXXX')
    .replace(/("(?:ssn|socialSecurityNumber|social_security_number)"\s*:\s*)("(?:[^"\\]|\\.)*"|\d+)/gi, `$1"${Mask}"`);
}

/**
 * The canonical event's identifiers, whose values are left as sent: an ICN, a tracking number or a
 * producer's message id may hold nine digits that are not an SSN, and ingest needs them as sent.
 */
const KeptJsonKeys = new Set([
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
]);

/** A JSON string (with its quotes) and whether a colon follows it (a key), or a number. */
const JsonToken = /"(?:[^"\\]|\\.)*"(\s*:)?|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const SsnShape = /(?<!\d)\d{3}([ -]?)\d{2}\1\d{4}(?!\d)/g;

/**
 * Masks SSN shapes in every JSON string and number that is not the value of one of
 * {@link KeptJsonKeys}: under any key (`"patientSsn"`, `"note"`, an unknown nested object), in an
 * array, or in a key itself. Works on the text, so a body that does not parse is masked too; a
 * string with escapes is read, masked and written back.
 */
function maskJson(body: string): string {
  let keyName: string | undefined;
  let keyEnd = -1;
  return body.replace(JsonToken, (token: string, colon: string | undefined, offset: number) => {
    const direct = keyName !== undefined && body.slice(keyEnd, offset).trim() === '';
    const kept = direct && KeptJsonKeys.has(keyName!);
    if (colon !== undefined) {
      keyName = token.slice(1, token.lastIndexOf('"'));
      keyEnd = offset + token.length;
    } else {
      keyName = undefined;
    }
    if (kept || token.length < 9) return token;
    // A number that is an SSN becomes the mask as a string, so that the body still parses.
    if (!token.startsWith('"')) return /^\d{9}$/.test(token) ? `"${Mask}"` : token;
    if (!token.includes('\\')) return token.replace(SsnShape, (shape) => shape.replace(/\d/g, 'X'));
    const quoted = colon === undefined ? token : token.slice(0, token.lastIndexOf('"') + 1);
    let text: string;
    try {
      text = JSON.parse(quoted) as string;
    } catch {
      return token.replace(SsnShape, (shape) => shape.replace(/\d/g, 'X'));
    }
    const masked = text.replace(SsnShape, (shape) => shape.replace(/\d/g, 'X'));
    return masked === text ? token : JSON.stringify(masked) + token.slice(quoted.length);
  });
}

/**
 * The body as it will be stored: as received, SSNs masked. `format` is how it will be parsed; a
 * JSON body is masked as HL7 too, in case it is HL7 sent under the wrong type.
 */
export function maskSsns(body: string, format: 'hl7' | 'json' = 'hl7'): string {
  const masked = maskPatterns(maskHl7(body));
  return format === 'json' ? maskJson(masked) : masked;
}
