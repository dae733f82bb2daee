// Reads fields out of HL7 v2 segments with each message's own delimiters (MSH-1 and MSH-2), and
// decodes escape sequences only in the pieces that are read. Ingest reads a dozen components of a
// handful of segments per message, so nothing is split or decoded ahead of the read that needs it:
// a field is found by its field separators (remembered as they are found), a piece of it by one scan
// of the field's repetition, component and subcomponent delimiters up to the piece's end, and only
// the piece that is read becomes a string (splitting each segment into all its fields on its first
// read was a fifth of the garbage that parsing a 1,000-message body left behind).

export interface Hl7Encoding {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export const StandardEncoding: Hl7Encoding = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };

/** A field holds an escape sequence the reader cannot decode; the message cannot be read as sent. */
export class Hl7ReadError extends Error {}

type EncodingRead = { encoding: Hl7Encoding; characters: string } | { error: string };

/**
 * The last header read and what it held: the messages of a body (and the bodies of one sender) share
 * their encoding characters, and a header that starts as the last one did, up to the separator after
 * MSH-2, holds the same ones. The prefix is at most ten characters, short enough that V8 copies it
 * rather than pointing into the body it was cut from, so it does not keep that body alive.
 */
let lastHeader: { prefix: string; read: EncodingRead } | undefined;

/**
 * Reads MSH-1 and MSH-2; an error with a reason when they are not usable encoding characters. A
 * header that starts as the last one read did gets the same object, so callers must not change it.
 */
export function readEncoding(headerLine: string): EncodingRead {
  if (lastHeader !== undefined && headerLine.startsWith(lastHeader.prefix)) return lastHeader.read;
  const field = headerLine[3];
  if (field === undefined || /[A-Za-z0-9\s]/.test(field)) return { error: 'MSH-1 (field separator) is missing' };
  const end = headerLine.indexOf(field, 4);
  const characters = end === -1 ? headerLine.slice(4) : headerLine.slice(4, end);
  if (characters.length < 4 || characters.length > 5) {
    return { error: 'MSH-2 must hold the four encoding characters (component, repetition, escape, subcomponent)' };
  }
  const all = field + characters.slice(0, 4);
  if (new Set(all).size !== all.length || /[A-Za-z0-9\s]/.test(all)) {
    return { error: 'MSH-1/MSH-2 encoding characters must be distinct punctuation characters' };
  }
  const [component, repetition, escapeCharacter, subcomponent] = characters as unknown as [string, string, string, string];
  const read = { encoding: { field, component, repetition, escape: escapeCharacter, subcomponent }, characters };
  // Without the separator after MSH-2 the characters run to the end of the line, so a longer line
  // that starts the same would read differently.
  if (end !== -1) lastHeader = { prefix: headerLine.slice(0, end + 1), read };
  return read;
}

/**
 * The line breaks of a text (CR, LF or CRLF, and MLLP's frame bytes VT and FS), at which its segments
 * end, found in order as the text is scanned: a body is not split into lines, so that a line becomes
 * a string only where it is read.
 *
 * VT (0x0B) starts an MLLP frame and FS (0x1C) ends one; neither may appear inside a message. They
 * break lines, rather than being deleted, because frames sent back to back need not put a CR after
 * FS (`<VT>msg1<FS><VT>msg2<FS><CR>`): deleted, msg2's MSH was glued to msg1's last segment, and msg2
 * was read as part of msg1, its dispense under msg1's veteran. A frame byte also ends the message
 * ({@link isFrameBreak}): what follows belongs to the next frame.
 *
 * Splitting (hl7.ts) and masking (mask.ts) each write out their own loop over these, and must break
 * lines and messages alike: a PID the masker read under another header than the splitter did would
 * be masked with the wrong delimiters. They do not share one loop that calls each back per line:
 * a callback per line costs more than the splitting itself on ingest's hot path.
 */
export class LineBreaks {
  readonly #text: string;
  #cr: number;
  #lf: number;
  // -1 for good after the first look in a text without frames (nearly every body), so that they
  // cost a comparison per line.
  #vt: number;
  #fs: number;

  constructor(text: string) {
    this.#text = text;
    this.#cr = text.indexOf('\r');
    this.#lf = text.indexOf('\n');
    this.#vt = text.indexOf('\x0b');
    this.#fs = text.indexOf('\x1c');
  }

  /** Where the line that starts at `start` ends: at its line break, or at the end of the text. */
  lineEnd(start: number): number {
    if (this.#cr !== -1 && this.#cr < start) this.#cr = this.#text.indexOf('\r', start);
    if (this.#lf !== -1 && this.#lf < start) this.#lf = this.#text.indexOf('\n', start);
    const cr = this.#cr;
    const lf = this.#lf;
    const end = cr === -1 ? (lf === -1 ? this.#text.length : lf) : lf === -1 || cr < lf ? cr : lf;
    if (this.#vt === -1 && this.#fs === -1) return end;
    if (this.#vt !== -1 && this.#vt < start) this.#vt = this.#text.indexOf('\x0b', start);
    if (this.#fs !== -1 && this.#fs < start) this.#fs = this.#text.indexOf('\x1c', start);
    const vt = this.#vt;
    const fs = this.#fs;
    return Math.min(end, vt === -1 ? end : vt, fs === -1 ? end : fs);
  }

  /** Where the line after the one that lineEnd just found ending at `end` starts; past the text after the last. */
  nextStart(end: number): number {
    return end === this.#cr && this.#lf === end + 1 ? end + 2 : end + 1;
  }
}

/** True when the line that ends at `end` (from {@link LineBreaks.lineEnd}) ends at an MLLP frame byte, VT or FS: the message ends with it. */
export function isFrameBreak(text: string, end: number): boolean {
  const code = text.charCodeAt(end);
  return code === 0x0b || code === 0x1c;
}

/**
 * Where the content of the line text[start, end) begins once what `noise` (a sticky pattern) matches
 * before it is skipped; `end` for a line of noise only. A line that starts with printable ASCII, as
 * a segment name does, is not matched against the pattern at all.
 */
export function lineContentStart(text: string, start: number, end: number, noise: RegExp): number {
  const first = text.charCodeAt(start);
  if (first > 0x20 && first < 0x80) return start;
  noise.lastIndex = start;
  noise.test(text);
  return Math.min(noise.lastIndex, end);
}

/**
 * Where piece `index` (from 0) of text[start, end) cut at `delimiter` starts, -1 past the last: the
 * pieces of that range, without cutting it out. A delimiter that runs past `end` is not in the range,
 * and neither is any later one.
 */
export function pieceStart(text: string, delimiter: string, index: number, start: number, end: number): number {
  for (let i = 0; i < index; i++) {
    const next = indexWithin(text, delimiter, start, end);
    if (next === -1) return -1;
    start = next + delimiter.length;
  }
  return start;
}

/** Where the piece of text[…, end) cut at `delimiter` that starts at `start` ends. */
export function pieceEnd(text: string, delimiter: string, start: number, end: number): number {
  const next = indexWithin(text, delimiter, start, end);
  return next === -1 ? end : next;
}

/**
 * The first `delimiter` wholly within text[start, end), -1 when there is none. The search stops at
 * `end`, so that reading a field in place in the whole body costs the field's length, not the rest
 * of the body's (indexOf searches to the end of the text).
 */
function indexWithin(text: string, delimiter: string, start: number, end: number): number {
  if (delimiter.length !== 1) {
    const next = text.indexOf(delimiter, start);
    return next === -1 || next + delimiter.length > end ? -1 : next;
  }
  const code = delimiter.charCodeAt(0);
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) === code) return i;
  }
  return -1;
}

/** Where the first of three delimiters (char codes) is in text[from, end), `end` when none is. */
function nextDelimiter(text: string, from: number, end: number, a: number, b: number, c: number): number {
  let at = from;
  while (at < end) {
    const code = text.charCodeAt(at);
    if (code === a || code === b || code === c) return at;
    at++;
  }
  return end;
}

function countOf(text: string, delimiter: string): number {
  let count = 0;
  for (let at = text.indexOf(delimiter); at !== -1; at = text.indexOf(delimiter, at + delimiter.length)) count++;
  return count;
}

const HexPairs = /^(?:[0-9A-Fa-f]{2})*$/;

/**
 * The text one escape sequence stands for, given what lies between its escape characters. What each
 * sequence becomes is what node-hl7-client (the oracle in test/ingest/hl7-oracle.test.ts) made of it
 * when it read these fields, so that stored values stay as they were:
 * - \F\ \S\ \T\ \R\ \E\: the message's own delimiters. Like the library, the first letter decides
 *   (`\Fxx\` is `|`): HL7 defines no longer forms, and a sender that writes one means the delimiter.
 * - \Xhh…\: each pair of hex digits is one character of that code (ISO-8859-1, as the library did):
 *   exact for the ASCII CMOP sends, such as the \X0D\ and \X0A\ our own escapeHl7 writes. A sequence
 *   that is not pairs of hex digits throws, and the message is answered AR with a reason. Odd
 *   lengths and half-hex pairs such as `\X4G\` are refused too, rather than read by parseInt's
 *   leniency as a NUL or a truncated code. A pair that stands for NUL (`\X00\`) throws too:
 *   Postgres text cannot hold a NUL, and one in a stored value would fail the whole body's insert.
 * - \H\ \N\ (highlighting), \Zxx\ (locally defined), \Cxxyy\ \Mxxyyzz\ (character-set switches):
 *   dropped. Highlighting has no meaning in a stored value; no sender has told us what a Z escape
 *   means; and CMOP sends ASCII, so no text follows a character-set switch that needs converting.
 * - Anything else, the formatting commands \.br\ \.sp\ \.in\ … among them, stays as written: they
 *   belong to FT (formatted text) fields, and none of the fields ingest reads is one.
 */
function decodeSequence(inner: string, encoding: Hl7Encoding): string | undefined {
  switch (inner[0]) {
    case 'F':
      return encoding.field;
    case 'S':
      return encoding.component;
    case 'T':
      return encoding.subcomponent;
    case 'R':
      return encoding.repetition;
    case 'E':
      return encoding.escape;
    case 'X': {
      const hex = inner.slice(1);
      if (!HexPairs.test(hex)) throw new Hl7ReadError('a hex escape sequence (\\X…\\) is not pairs of hex digits');
      let out = '';
      for (let i = 0; i < hex.length; i += 2) {
        const code = Number.parseInt(hex.slice(i, i + 2), 16);
        if (code === 0)
          throw new Hl7ReadError('a hex escape sequence (\\X…\\) stands for a NUL character (U+0000), which cannot be stored');
        out += String.fromCharCode(code);
      }
      return out;
    }
    case 'H':
    case 'N':
    case 'Z':
    case 'C':
    case 'M':
      return '';
    default:
      return undefined;
  }
}

/**
 * Decodes the escape sequences of one piece of a field (split already, so it holds no delimiter but
 * the escape character). A sequence runs from an escape character to the next one; an escape
 * character with no partner after it is kept as it is.
 */
export function decodeEscapes(text: string, encoding: Hl7Encoding): string {
  const escapeCharacter = encoding.escape;
  let open = text.indexOf(escapeCharacter);
  if (open === -1) return text;
  let out = '';
  let from = 0;
  while (open !== -1) {
    const close = text.indexOf(escapeCharacter, open + escapeCharacter.length);
    if (close === -1) break;
    const decoded = decodeSequence(text.slice(open + escapeCharacter.length, close), encoding);
    out += text.slice(from, open) + (decoded ?? text.slice(open, close + escapeCharacter.length));
    from = close + escapeCharacter.length;
    open = text.indexOf(escapeCharacter, from);
  }
  return out + text.slice(from);
}

/**
 * One segment of a message, read with the message's encoding characters. Fields are numbered from 1
 * as in the HL7 standard; in MSH (and the FHS/BHS batch headers) MSH-1 is the field separator itself
 * and MSH-2 the encoding characters, so MSH-n is the (n-1)th piece after the name.
 */
export class Hl7Segment {
  /** The first three characters, as HL7 segment names are. */
  readonly name: string;
  readonly text: string;
  readonly encoding: Hl7Encoding;
  /** Where the field separators found so far are, in order: separator i ends piece i (the name is piece 0). */
  readonly #separators: number[] = [];
  #allSeparatorsFound = false;
  readonly #headerNumbering: boolean;

  constructor(text: string, encoding: Hl7Encoding) {
    this.text = text;
    this.encoding = encoding;
    this.name = text.slice(0, 3);
    this.#headerNumbering = this.name === 'MSH' || this.name === 'FHS' || this.name === 'BHS';
  }

  /**
   * Where the piece (cut at the field separator) that holds field `n` starts, -1 when the segment has
   * no such field; separators are looked for only as far as a read needs, and once.
   */
  #fieldStart(n: number): number {
    const piece = this.#headerNumbering ? n - 1 : n;
    const { field } = this.encoding;
    const separators = this.#separators;
    while (separators.length < piece && !this.#allSeparatorsFound) {
      const next = this.text.indexOf(field, separators.length === 0 ? 0 : separators[separators.length - 1]! + field.length);
      if (next === -1) this.#allSeparatorsFound = true;
      else separators.push(next);
    }
    return piece <= separators.length ? separators[piece - 1]! + field.length : -1;
  }

  /** Where the field that starts at `start` (from #fieldStart) ends. */
  #fieldEnd(start: number): number {
    const next = this.text.indexOf(this.encoding.field, start);
    return next === -1 ? this.text.length : next;
  }

  /** Field `n` as sent (still escaped), '' when the segment has no such field. */
  raw(n: number): string {
    if (n < 1) return '';
    if (this.#headerNumbering && n === 1) return this.encoding.field;
    const start = this.#fieldStart(n);
    return start === -1 ? '' : this.text.slice(start, this.#fieldEnd(start));
  }

  /** How many repetitions field `n` holds: 0 when it is empty. */
  repetitionCount(n: number): number {
    const field = this.raw(n);
    return field === '' ? 0 : countOf(field, this.encoding.repetition) + 1;
  }

  /**
   * Subcomponent `subcomponent` of component `component` of repetition `repetition` of field `n`
   * (all from 1), escape sequences decoded, surrounding white space trimmed; '' when absent.
   * Throws Hl7ReadError when that piece holds an escape sequence that cannot be decoded.
   */
  value(n: number, component = 1, subcomponent = 1, repetition = 1): string {
    if (n < 1) return '';
    const encoding = this.encoding;
    let text = this.text;
    let start: number;
    let end: number;
    if (this.#headerNumbering && n === 1) {
      text = encoding.field;
      start = 0;
      end = text.length;
    } else {
      start = this.#fieldStart(n);
      if (start === -1) return '';
      end = this.#fieldEnd(start);
    }
    // One pass over the field, up to the end of the piece: each delimiter moves the reading to the
    // next repetition, component or subcomponent (the encoding characters are one code unit each).
    const R = encoding.repetition.charCodeAt(0);
    const C = encoding.component.charCodeAt(0);
    const S = encoding.subcomponent.charCodeAt(0);
    let rep = 1;
    let comp = 1;
    let sub = 1;
    let at = start;
    while (rep !== repetition || comp !== component || sub !== subcomponent) {
      at = nextDelimiter(text, at, end, R, C, S);
      // The field, or the repetition or component the piece is in, ended before the piece.
      if (at === end) return '';
      const code = text.charCodeAt(at);
      if (code === R) {
        if (rep === repetition) return '';
        rep++;
        comp = 1;
        sub = 1;
      } else if (code === C) {
        if (rep === repetition && comp === component) return '';
        comp++;
        sub = 1;
      } else {
        sub++;
      }
      at++;
    }
    const piece = text.slice(at, nextDelimiter(text, at, end, R, C, S));
    if (!piece.includes(encoding.escape)) return piece.trim();
    try {
      return decodeEscapes(piece, encoding).trim();
    } catch (error) {
      if (error instanceof Hl7ReadError) throw new Hl7ReadError(`${this.name}-${n}: ${error.message}`);
      throw error;
    }
  }
}
