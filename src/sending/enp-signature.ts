// The `x-enp-signature` VA Notify puts on per-notification callbacks (mechanism B): HMAC-SHA256,
// keyed by the secret of the API key that sent the notification, over the callback body encoded
// the way Python's `urllib.parse.urlencode(body)` encodes a dict. The sandbox signs with it and the
// callbacks endpoint verifies with it, so both sides agree on the exact bytes.
import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Python's `str()` of a JSON value as `json.loads` would have produced it: None/True/False for
 * null/true/false, and the repr of lists and dicts. Callback bodies only carry strings and nulls;
 * the rest is here so a surprising field does not silently produce a different signature.
 */
function pythonStr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return value;
  // Integers and ordinary decimals print alike in both languages; exponents and `5.0` would not,
  // but no callback field is a number.
  if (typeof value === 'number') return String(value);
  return pythonRepr(value);
}

function pythonRepr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'string') return pythonStringRepr(value);
  if (typeof value === 'boolean' || typeof value === 'number') return pythonStr(value);
  if (Array.isArray(value)) return `[${value.map(pythonRepr).join(', ')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).map(([k, v]) => `${pythonStringRepr(k)}: ${pythonRepr(v)}`);
    return `{${entries.join(', ')}}`;
  }
  return String(value);
}

/** Python's repr of a str: single quotes unless the text has a single quote and no double quote. */
function pythonStringRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const escaped = text
    .replace(/\\/g, '\\\\')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t')
    .replaceAll(quote, `\\${quote}`);
  return `${quote}${escaped}${quote}`;
}

/** Python's `quote_plus`: only letters, digits and `_.-~` stay as they are; space becomes `+`. */
export function quotePlus(text: string): string {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** The body as `urllib.parse.urlencode` encodes it: fields in the body's own key order. */
export function pythonUrlencode(body: Record<string, unknown>): string {
  return Object.entries(body)
    .map(([key, value]) => `${quotePlus(key)}=${quotePlus(pythonStr(value))}`)
    .join('&');
}

/**
 * The hex `x-enp-signature` of a callback body. Key order matters: pass the body as parsed from the
 * request (JSON.parse keeps the sender's order for these non-numeric keys).
 */
export function enpSignature(body: Record<string, unknown>, secret: string): string {
  return createHmac('sha256', secret).update(pythonUrlencode(body), 'utf8').digest('hex');
}

/** Whether a received signature matches the body, compared in constant time. */
export function enpSignatureMatches(body: Record<string, unknown>, secret: string, signature: string): boolean {
  const expected = Buffer.from(enpSignature(body, secret), 'utf8');
  const given = Buffer.from(signature.trim().toLowerCase(), 'utf8');
  return expected.length === given.length && timingSafeEqual(expected, given);
}
