// The service never stores an SSN. Request bodies are kept "as received, SSNs masked": this module
// does the masking, on the raw text and before anything is parsed or stored, so that a body that
// fails to parse is masked too. Everything else in the body is left byte for byte as it came.
import { readEncoding, standardEncoding, type Hl7Encoding } from './hl7-reader.ts';

const MASK = 'XXXXXXXXX';

/** Identifiers PID-3 may keep: the ICN, the MHV correlation id and the local DFN. */
function isKeptIdentifier(type: string, authority: string): boolean {
  return (type === 'NI' && authority === 'USVHA') || (type === 'PI' && (authority === '200MHS' || authority === 'USVHA'));
}

function maskRepetitions(field: string, enc: Hl7Encoding, shouldMask: (type: string, authority: string) => boolean): string {
  return field
    .split(enc.repetition)
    .map((repetition) => {
      const components = repetition.split(enc.component);
      if ((components[0] ?? '') === '') return repetition;
      const part = (i: number) => (components[i] ?? '').split(enc.subcomponent)[0]!.trim().toUpperCase();
      if (!shouldMask(part(4), part(3))) return repetition;
      components[0] = MASK;
      return components.join(enc.component);
    })
    .join(enc.repetition);
}

/**
 * Masks the PID fields that carry SSNs: every PID-3 repetition that is not the ICN (NI/USVHA), the
 * MHV correlation id (PI/200MHS) or the DFN (PI/USVHA), including ones without a type code (R06
 * sends `666009876^4^M11`); PID-2 and PID-4 repetitions typed SS; and PID-19 (SSN).
 */
function maskPid(segment: string, enc: Hl7Encoding): string {
  const fields = segment.split(enc.field);
  if (fields[3] !== undefined) fields[3] = maskRepetitions(fields[3], enc, (type, authority) => !isKeptIdentifier(type, authority));
  for (const i of [2, 4]) {
    if (fields[i] !== undefined) fields[i] = maskRepetitions(fields[i]!, enc, (type) => type === 'SS');
  }
  if (fields[19] !== undefined && fields[19] !== '') fields[19] = MASK;
  return fields.join(enc.field);
}

const lineBreak = /\r\n|\r|\n/g;
/** What may precede a segment name on its line: white space, a byte-order mark, MLLP framing. */
const leadingNoise = /[\s\uFEFF\x0b\x1c]*/y;

/**
 * Masks SSNs in HL7 segments, honouring the encoding characters of each MSH (or FHS/BHS) header.
 * Only header and PID lines are cut out of the body; a 1,000-message file is otherwise scanned, not
 * split, and comes back as the same string when it holds nothing to mask.
 */
function maskHl7(body: string): string {
  let encoding = standardEncoding;
  let masked = '';
  let copiedTo = 0;
  for (let start = 0; start <= body.length; ) {
    lineBreak.lastIndex = start;
    const found = lineBreak.exec(body);
    const end = found ? found.index : body.length;
    leadingNoise.lastIndex = start;
    leadingNoise.exec(body);
    const at = leadingNoise.lastIndex;
    if (body.startsWith('PID', at) && body[at + 3] === encoding.field) {
      const segment = body.slice(at, end);
      const pid = maskPid(segment, encoding);
      if (pid !== segment) {
        masked += body.slice(copiedTo, at) + pid;
        copiedTo = end;
      }
    } else if (body.startsWith('MSH', at) || body.startsWith('FHS', at) || body.startsWith('BHS', at)) {
      const read = readEncoding(body.slice(at, end));
      if (!('error' in read)) encoding = read.encoding;
    }
    if (!found) break;
    start = end + found[0].length;
  }
  return copiedTo === 0 ? body : masked + body.slice(copiedTo);
}

/** `ddd-dd-dddd` anywhere, and JSON properties named like an SSN. */
function maskPatterns(body: string): string {
  return body
    .replace(/(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)/g, 'XXX-XX-XXXX')
    .replace(/("(?:ssn|socialSecurityNumber|social_security_number)"\s*:\s*)("(?:[^"\\]|\\.)*"|\d+)/gi, `$1"${MASK}"`);
}

/** The body as it will be stored: as received, SSNs masked. */
export function maskSsns(body: string): string {
  return maskPatterns(maskHl7(body));
}
