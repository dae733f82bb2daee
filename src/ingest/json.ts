// The canonical JSON dispense event (for producers that already parsed HL7, and for a future
// event-bus consumer): one event or an array of them. Each event is validated on its own, so one
// bad event does not cost the good ones; every problem is reported with its index and field.
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { isoInstantMillis, ZonedIsoPattern } from '../instant.ts';
import { FieldLimits, IcnPattern, normaliseCarrier, type DispenseRecord } from './dispense.ts';

const Instant = (description: string) =>
  Type.String({
    // Its parts must also be in range (isoInstantMillis), which a pattern does not say.
    pattern: ZonedIsoPattern,
    description: `${description}; ISO 8601 with a zone`,
  });

const Text = (maxLength: number, description: string) => Type.String({ minLength: 1, maxLength, description });

export const DispenseEvent = Type.Object(
  {
    messageId: Type.Optional(Text(FieldLimits.messageControlId, "the producer's id of this event, kept for tracing")),
    stationNumber: Type.String({ pattern: `^[0-9A-Za-z]{1,${FieldLimits.stationNumber}}$`, description: 'VA station number, e.g. 521' }),
    patient: Type.Object({
      icn: Type.String({ pattern: IcnPattern, description: 'ICN, e.g. 1012345678V123456' }),
      mhvCorrelationId: Type.Optional(Text(FieldLimits.mhvCorrelationId, 'MHV correlation id, needed for the Account Activity Log')),
    }),
    prescription: Type.Object({
      rxNumber: Text(FieldLimits.rxNumber, 'Rx number'),
      fillNumber: Type.Integer({ minimum: 0, maximum: 9999, description: '0 for the original fill' }),
      drugName: Type.Optional(Text(FieldLimits.drugName, 'drug print name')),
      ndc: Type.Optional(Type.String({ pattern: '^[0-9]{4,5}-?[0-9]{3,4}-?[0-9]{1,2}$', description: 'NDC, 10 or 11 digits' })),
      quantity: Type.Optional(Type.Number({ minimum: 0 })),
    }),
    dispensedAt: Type.Optional(Instant('when the fill was dispensed')),
    shippedAt: Type.Optional(Instant('when the package shipped')),
    carrier: Type.Optional(
      Type.String({ maxLength: FieldLimits.carrier, description: 'UPS, USPS, FEDEX, DHL; blank or absent means unknown (UNK)' }),
    ),
    trackingNumber: Text(FieldLimits.trackingNumber, 'package tracking number'),
  },
  { $id: 'DispenseEvent', description: 'one CMOP medication dispense, already parsed' },
);
export type DispenseEvent = Static<typeof DispenseEvent>;

const check = TypeCompiler.Compile(DispenseEvent);

export interface EventError {
  /** Position of the event in the array (0 for a single event); absent for a body-level problem. */
  index?: number;
  /** Dotted path of the bad field, e.g. `patient.icn`. */
  field?: string;
  message: string;
}

export type JsonBodyResult =
  | {
      kind: 'events';
      received: number;
      dispenses: DispenseRecord[];
      /** Each dispense's index in the body. */
      indices: number[];
      errors: EventError[];
    }
  | { kind: 'invalid'; error: string };

function fieldName(path: string): string {
  return path.replace(/^\//, '').split('/').join('.') || '(event)';
}

/** Schema errors for one event, one per field (the first message for each). */
function eventErrors(event: unknown, index: number): EventError[] {
  const byField = new Map<string, string>();
  // The compiled check first: walking the schema for error messages is far slower, and only an
  // invalid event needs them.
  if (!check.Check(event)) {
    for (const error of check.Errors(event)) {
      const field = fieldName(error.path);
      if (!byField.has(field)) byField.set(field, error.message);
    }
  }
  const errors = [...byField].map(([field, message]) => ({ index, field, message }));
  if (errors.length > 0) return errors;
  const valid = event as DispenseEvent;
  // Text is trimmed when stored, so a value of spaces only passes minLength but would be stored as
  // '': an Rx number emailed as "Prescription ending in ", a drug name of nothing, a correlation id
  // that no AAL event can use. An optional field with no value is left out, never sent blank.
  const texts: [string, string | undefined][] = [
    ['messageId', valid.messageId],
    ['patient.mhvCorrelationId', valid.patient.mhvCorrelationId],
    ['prescription.rxNumber', valid.prescription.rxNumber],
    ['prescription.drugName', valid.prescription.drugName],
    ['trackingNumber', valid.trackingNumber],
  ];
  for (const [field, text] of texts) {
    if (text !== undefined && text.trim() === '') errors.push({ index, field, message: 'blank: white space only' });
  }
  // Postgres text cannot hold a NUL (`\u0000`), and one in a stored value failed the insert of the
  // whole body. The fields with a pattern cannot hold one; the carrier is free text too.
  for (const [field, text] of [...texts, ['carrier', valid.carrier] as [string, string | undefined]]) {
    if (text?.includes('\0')) errors.push({ index, field, message: 'holds a NUL character (U+0000), which cannot be stored' });
  }
  for (const field of ['dispensedAt', 'shippedAt'] as const) {
    const text = valid[field];
    if (text !== undefined && isoInstantMillis(text) === undefined) errors.push({ index, field, message: 'not a real date and time' });
  }
  return errors;
}

export function toDispenseRecord(event: DispenseEvent): DispenseRecord {
  return {
    stationNumber: event.stationNumber,
    rxNumber: event.prescription.rxNumber.trim(),
    fillNumber: event.prescription.fillNumber,
    trackingNumber: event.trackingNumber.trim(),
    carrier: normaliseCarrier(event.carrier),
    drugName: event.prescription.drugName?.trim() ?? null,
    ndc: event.prescription.ndc ?? null,
    quantity: event.prescription.quantity ?? null,
    dispensedAt: event.dispensedAt === undefined ? null : new Date(event.dispensedAt),
    shippedAt: event.shippedAt === undefined ? null : new Date(event.shippedAt),
    veteranIcn: event.patient.icn,
    mhvCorrelationId: event.patient.mhvCorrelationId?.trim() ?? null,
    messageControlId: event.messageId?.trim() ?? null,
    state: 'pending',
    stateReason: null,
  };
}

/** Parses and validates a JSON body. Never throws. */
export function parseJsonBody(body: string, maxEvents = Number.POSITIVE_INFINITY): JsonBodyResult {
  // JSON.parse builds every value of the body before anything can be counted, and 5 MiB of `{},`
  // is 1.7 million objects: a body is refused unread when it holds more values than `maxEvents`
  // events could (an event has about 18 commas and brackets; the search is native, not per character).
  const tooMany = `the body holds more than ${maxEvents} dispense events: send at most ${maxEvents} per body`;
  if (Number.isFinite(maxEvents) && countValueMarks(body, maxEvents * ValueMarksPerEvent) > maxEvents * ValueMarksPerEvent) {
    return { kind: 'invalid', error: tooMany };
  }
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    // JSON.parse's own message quotes the body (`Unexpected token 'C', "CMOPTEST A"... is not
    // valid JSON`), which may hold a veteran's name or identifiers: the answer says where instead.
    return { kind: 'invalid', error: `the body is not valid JSON: ${describeSyntaxError(body)}` };
  }
  const events = Array.isArray(value) ? value : [value];
  if (events.length > maxEvents) return { kind: 'invalid', error: tooMany };
  if (events.length === 0) return { kind: 'invalid', error: 'the array holds no dispense event' };
  if (!Array.isArray(value) && (value === null || typeof value !== 'object')) {
    return { kind: 'invalid', error: 'expected a dispense event object or an array of them' };
  }
  const dispenses: DispenseRecord[] = [];
  const indices: number[] = [];
  const errors: EventError[] = [];
  events.forEach((event, index) => {
    const problems = eventErrors(event, index);
    if (problems.length > 0) {
      errors.push(...problems);
    } else {
      dispenses.push(toDispenseRecord(event as DispenseEvent));
      indices.push(index);
    }
  });
  return { kind: 'events', received: events.length, dispenses, indices, errors };
}

/** Commas and opening brackets one event may hold, with room for a producer's extra fields. */
const ValueMarksPerEvent = 40;

/** The commas, `{` and `[` in `text`, counted up to just past `limit`. */
function countValueMarks(text: string, limit: number): number {
  let count = 0;
  for (const mark of [',', '{', '[']) {
    for (let at = text.indexOf(mark); at !== -1 && count <= limit; at = text.indexOf(mark, at + 1)) count++;
  }
  return count;
}

/** Where a text that JSON.parse refused stops being JSON, as line, column and character (from 1). */
function describeSyntaxError(text: string): string {
  const at = syntaxErrorAt(text);
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < at; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  const where = `line ${line}, column ${at - lineStart + 1}`;
  return at >= text.length
    ? `the body ends before the JSON does (${where}, character ${at + 1})`
    : `unexpected character at ${where} (character ${at + 1})`;
}

const isJsonSpace = (code: number) => code === 32 || code === 9 || code === 10 || code === 13;
const isDigit = (code: number) => code >= 48 && code <= 57;
const isHex = (code: number) => isDigit(code) || (code >= 65 && code <= 70) || (code >= 97 && code <= 102);

/**
 * The offset of the first character at which `text` stops being JSON (RFC 8259, as JSON.parse reads
 * it); its length when it ends too soon; -1 when it is JSON. Run only on a body JSON.parse refused;
 * nesting is kept in an array, not on the call stack, so a deep body cannot overflow it.
 */
export function syntaxErrorAt(text: string): number {
  const n = text.length;
  const open: number[] = [];
  let i = 0;
  let mode: 'value' | 'key' | 'after' = 'value';
  const skipSpace = () => {
    while (i < n && isJsonSpace(text.charCodeAt(i))) i++;
  };
  /** Reads the string at text[i] ('"'); false, with i at the fault, when it is not one. */
  const string = (): boolean => {
    for (i++; i < n; ) {
      const code = text.charCodeAt(i);
      if (code === 34) {
        i++;
        return true;
      }
      if (code < 32) return false;
      if (code !== 92) {
        i++;
        continue;
      }
      const escaped = text[i + 1];
      if (escaped !== undefined && '"\\/bfnrt'.includes(escaped)) {
        i += 2;
      } else if (escaped === 'u') {
        for (let k = 2; k < 6; k++) {
          if (!isHex(text.charCodeAt(i + k))) {
            i += Math.min(k, n - i);
            return false;
          }
        }
        i += 6;
      } else {
        i = Math.min(i + 1, n);
        return false;
      }
    }
    return false;
  };
  const digits = (): boolean => {
    if (!isDigit(text.charCodeAt(i))) return false;
    while (isDigit(text.charCodeAt(i))) i++;
    return true;
  };
  const number = (): boolean => {
    if (text[i] === '-') i++;
    if (text[i] === '0') i++;
    else if (!digits()) return false;
    if (text[i] === '.') {
      i++;
      if (!digits()) return false;
    }
    if (text[i] === 'e' || text[i] === 'E') {
      i++;
      if (text[i] === '+' || text[i] === '-') i++;
      if (!digits()) return false;
    }
    return true;
  };
  for (;;) {
    skipSpace();
    if (mode === 'after') {
      if (open.length === 0) return i < n ? i : -1;
      const closer = open.at(-1) === 123 ? '}' : ']';
      if (text[i] === ',') {
        i++;
        mode = open.at(-1) === 123 ? 'key' : 'value';
      } else if (text[i] === closer) {
        i++;
        open.pop();
      } else {
        return i;
      }
      continue;
    }
    if (i >= n) return n;
    if (mode === 'key') {
      if (text[i] !== '"' || !string()) return i;
      skipSpace();
      if (text[i] !== ':') return i;
      i++;
      mode = 'value';
      continue;
    }
    const ch = text[i]!;
    if (ch === '{' || ch === '[') {
      i++;
      skipSpace();
      if (text[i] === (ch === '{' ? '}' : ']')) {
        i++;
        mode = 'after';
      } else {
        open.push(ch.charCodeAt(0));
        mode = ch === '{' ? 'key' : 'value';
      }
      continue;
    }
    if (ch === '"') {
      if (!string()) return i;
    } else if (ch === '-' || isDigit(ch.charCodeAt(0))) {
      if (!number()) return i;
    } else {
      const literal = ['true', 'false', 'null'].find((word) => word[0] === ch);
      if (literal === undefined) return i;
      for (let k = 0; k < literal.length; k++, i++) {
        if (text[i] !== literal[k]) return i;
      }
    }
    mode = 'after';
  }
}
