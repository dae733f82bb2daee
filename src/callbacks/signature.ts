// The `x-enp-signature` of VA Notify's per-notification callbacks: HMAC-SHA256, keyed by the secret
// of the API key that sent the notification, over the callback's fields encoded the way Python's
// `urllib.parse.urlencode(payload)` encodes the dict VA Notify serialised. To compute the same text
// the body is read the way Python's `json.loads` reads it (key order, ints versus floats, nested
// values printed with `repr`), from the raw bytes, never from a re-serialised JavaScript object.
import { createHmac, timingSafeEqual } from 'node:crypto';

type PythonValue =
  | { kind: 'str'; value: string }
  | { kind: 'int'; text: string }
  | { kind: 'float'; value: number }
  | { kind: 'bool'; value: boolean }
  | { kind: 'none' }
  | { kind: 'list'; items: PythonValue[] }
  | { kind: 'dict'; entries: Map<string, PythonValue> };

export class PythonJsonError extends Error {
  override name = 'PythonJsonError';
}

/**
 * `urlencode(json.loads(body))` as Python computes it. A string is parsed as JSON text; an object
 * is taken as the JSON text `JSON.stringify` makes of it (what a receiver of that JSON would sign).
 */
export function pythonUrlencode(body: string | Record<string, unknown>): string {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const value = parsePythonJson(text);
  if (value.kind !== 'dict') throw new PythonJsonError('the body is not a JSON object');
  return [...value.entries].map(([key, item]) => `${quotePlus(key)}=${quotePlus(pythonStr(item))}`).join('&');
}

/** The `x-enp-signature` VA Notify puts on a per-notification callback (the sandbox signs with it). */
export function enpSignature(body: string | Record<string, unknown>, secret: string): string {
  return createHmac('sha256', secret).update(pythonUrlencode(body), 'utf8').digest('hex');
}

/**
 * True when `header` is the HMAC of the body under one of `secrets`. Several secrets are accepted so
 * that callbacks for notifications sent with a key that has since been rotated still verify. Every
 * secret is tried (no early exit) and digests are compared in constant time.
 */
export function verifyEnpSignature(rawBody: string, header: string | undefined, secrets: readonly string[]): boolean {
  if (header === undefined) return false;
  const presentedHex = header.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(presentedHex)) return false;
  let message: string;
  try {
    message = pythonUrlencode(rawBody);
  } catch {
    return false; // not something VA Notify could have signed
  }
  const presented = Buffer.from(presentedHex, 'hex');
  let match = false;
  for (const secret of secrets) {
    if (secret.length === 0) continue;
    const expected = createHmac('sha256', secret).update(message, 'utf8').digest();
    match = timingSafeEqual(expected, presented) || match;
  }
  return match;
}

/** Python's `quote_plus(text)`: UTF-8, only `A-Za-z0-9_.-~` left as they are, space as `+`. */
export function quotePlus(text: string): string {
  // encodeURIComponent also leaves !'()* alone (Python does not) and throws on a lone surrogate,
  // as Python's UTF-8 encoder does.
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** Python's `str(value)`: a string is itself, everything else is its `repr`. */
function pythonStr(value: PythonValue): string {
  return value.kind === 'str' ? value.value : pythonRepr(value);
}

function pythonRepr(value: PythonValue): string {
  switch (value.kind) {
    case 'str':
      return reprString(value.value);
    case 'int':
      return value.text === '-0' ? '0' : value.text;
    case 'float':
      return reprFloat(value.value);
    case 'bool':
      return value.value ? 'True' : 'False';
    case 'none':
      return 'None';
    case 'list':
      return `[${value.items.map(pythonRepr).join(', ')}]`;
    case 'dict':
      return `{${[...value.entries].map(([key, item]) => `${reprString(key)}: ${pythonRepr(item)}`).join(', ')}}`;
  }
}

// Python prints a character as is when it is printable: not in the Unicode categories Other (C*)
// or Separator (Z*), the ASCII space excepted.
const NotPrintable = /^[\p{C}\p{Z}]$/u;

function reprString(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += `\\x${hex(code, 2)}`;
    else if (code < 0x7f || ch === ' ' || !NotPrintable.test(ch)) out += ch;
    else if (code <= 0xff) out += `\\x${hex(code, 2)}`;
    else if (code <= 0xffff) out += `\\u${hex(code, 4)}`;
    else out += `\\U${hex(code, 8)}`;
  }
  return out + quote;
}

function hex(code: number, width: number): string {
  return code.toString(16).padStart(width, '0');
}

/**
 * Python's `repr(float)`: the shortest digits that read back as the same number (as JavaScript's),
 * in positional notation while the decimal exponent is in [-4, 16), scientific otherwise, and
 * always with a `.0` or a fraction in positional notation.
 */
function reprFloat(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  const sign = value < 0 || Object.is(value, -0) ? '-' : '';
  const [mantissa, exponent] = Math.abs(value).toExponential().split('e') as [string, string];
  const digits = mantissa.replace('.', '');
  const point = Number(exponent) + 1; // digits = 0.d1d2... × 10^point
  if (point <= -4 || point > 16) {
    const scientificExponent = point - 1;
    const head = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${head}e${scientificExponent < 0 ? '-' : '+'}${String(Math.abs(scientificExponent)).padStart(2, '0')}`;
  }
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

const JsonNumber = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/** JSON as Python's `json.loads` reads it: objects keep key order, and a repeated key keeps its first place but its last value. */
function parsePythonJson(text: string): PythonValue {
  let position = 0;

  const fail = (what: string): never => {
    throw new PythonJsonError(`${what} at position ${position}`);
  };
  const skipWhitespace = () => {
    while (position < text.length && ' \t\n\r'.includes(text[position]!)) position += 1;
  };
  const expectLiteral = (literal: string) => {
    if (text.startsWith(literal, position)) position += literal.length;
    else fail('unexpected token');
  };

  const parseString = (): string => {
    position += 1; // opening quote
    let out = '';
    for (;;) {
      if (position >= text.length) fail('unterminated string');
      const ch = text[position]!;
      if (ch === '"') {
        position += 1;
        return out;
      }
      if (ch.charCodeAt(0) < 0x20) fail('control character in string');
      if (ch !== '\\') {
        out += ch;
        position += 1;
        continue;
      }
      const escaped = text[position + 1];
      position += 2;
      switch (escaped) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const code = text.slice(position, position + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(code)) fail('bad \\u escape');
          // Consecutive escaped surrogates form one character in both languages' strings.
          out += String.fromCharCode(Number.parseInt(code, 16));
          position += 4;
          break;
        }
        default:
          fail('bad escape');
      }
    }
  };

  const parseNumber = (): PythonValue => {
    JsonNumber.lastIndex = position;
    const match = JsonNumber.exec(text);
    if (match === null) return fail('unexpected token');
    position += match[0].length;
    if (match[1] === undefined && match[2] === undefined) return { kind: 'int', text: match[0] };
    return { kind: 'float', value: Number(match[0]) };
  };

  const parseValue = (depth: number): PythonValue => {
    if (depth > 100) fail('nested too deeply');
    skipWhitespace();
    const ch = text[position];
    if (ch === '{') {
      position += 1;
      const entries = new Map<string, PythonValue>();
      skipWhitespace();
      if (text[position] === '}') {
        position += 1;
        return { kind: 'dict', entries };
      }
      for (;;) {
        skipWhitespace();
        if (text[position] !== '"') fail('expected a key');
        const key = parseString();
        skipWhitespace();
        if (text[position] !== ':') fail("expected ':'");
        position += 1;
        entries.set(key, parseValue(depth + 1));
        skipWhitespace();
        if (text[position] === ',') position += 1;
        else if (text[position] === '}') {
          position += 1;
          return { kind: 'dict', entries };
        } else fail("expected ',' or '}'");
      }
    }
    if (ch === '[') {
      position += 1;
      const items: PythonValue[] = [];
      skipWhitespace();
      if (text[position] === ']') {
        position += 1;
        return { kind: 'list', items };
      }
      for (;;) {
        items.push(parseValue(depth + 1));
        skipWhitespace();
        if (text[position] === ',') position += 1;
        else if (text[position] === ']') {
          position += 1;
          return { kind: 'list', items };
        } else fail("expected ',' or ']'");
      }
    }
    if (ch === '"') return { kind: 'str', value: parseString() };
    if (ch === 't') {
      expectLiteral('true');
      return { kind: 'bool', value: true };
    }
    if (ch === 'f') {
      expectLiteral('false');
      return { kind: 'bool', value: false };
    }
    if (ch === 'n') {
      expectLiteral('null');
      return { kind: 'none' };
    }
    return parseNumber();
  };

  const value = parseValue(0);
  skipWhitespace();
  if (position !== text.length) fail('extra data');
  return value;
}
