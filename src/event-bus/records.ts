// One event-bus record, from its bytes to what the ingest stores: the HL7 text or the canonical
// JSON event it carries, or, for a record that cannot be read, the reason and its bytes.
import { maskSsns } from '../ingest/mask.ts';
import type { SchemaRegistryClient } from './registry-client.ts';
import { dispenseReaderType, unframe, withoutNulls, type DispenseEventValue } from './schema.ts';

/** What became of a record, for `rx_event_bus_records_total{outcome}`. */
export const RecordOutcomes = [
  'stored',
  'duplicate',
  'redelivered',
  'not_avro',
  'unknown_schema',
  'undecodable',
  'invalid_dispense',
] as const;
export type RecordOutcome = (typeof RecordOutcomes)[number];

export type DecodedRecord =
  | { kind: 'dispense'; contentType: 'application/hl7-v2' | 'application/json'; body: string }
  | {
      kind: 'bad';
      outcome: 'not_avro' | 'unknown_schema' | 'undecodable' | 'invalid_dispense';
      reason: string;
      contentType: string;
      body: string;
    };

/**
 * A record's bytes as inbound_message keeps them when they cannot be read as an event: base64 of
 * the bytes with any SSN in them masked (each byte read as one character, so the masking that
 * applies to a body applies here, and the bytes come back whole otherwise).
 */
export function keptBytes(value: Buffer | null | undefined): { contentType: string; body: string } {
  const bytes = value ?? Buffer.alloc(0);
  const masked = maskSsns(bytes.toString('latin1'));
  return { contentType: 'application/octet-stream; encoding=base64', body: Buffer.from(masked, 'latin1').toString('base64') };
}

/** Decodes one record; throws RegistryUnavailableError when the registry cannot be asked. */
export async function decodeRecord(value: Buffer | null | undefined, registry: SchemaRegistryClient): Promise<DecodedRecord> {
  const framed = unframe(value);
  if ('error' in framed) return { kind: 'bad', outcome: 'not_avro', reason: framed.error, ...keptBytes(value) };
  const lookup = await registry.lookup(framed.schemaId);
  if (lookup.kind === 'unknown') return { kind: 'bad', outcome: 'unknown_schema', reason: lookup.reason, ...keptBytes(value) };
  if (lookup.kind === 'incompatible') return { kind: 'bad', outcome: 'undecodable', reason: lookup.reason, ...keptBytes(value) };
  let event: DispenseEventValue;
  try {
    // Read with this service's schema, resolved from the writer's: a newer optional field is skipped.
    const decoded = dispenseReaderType.decode(framed.body, 0, lookup.resolver);
    if (decoded.offset !== framed.body.length)
      throw new Error(`${framed.body.length - Math.max(decoded.offset, 0)} bytes left over or missing after the record`);
    event = decoded.value as DispenseEventValue;
  } catch (error) {
    return {
      kind: 'bad',
      outcome: 'undecodable',
      reason: `Avro body does not decode with schema id ${framed.schemaId}: ${(error as Error).message}`,
      ...keptBytes(value),
    };
  }
  if (event.hl7Message !== null && event.dispense === null)
    return { kind: 'dispense', contentType: 'application/hl7-v2', body: event.hl7Message };
  if (event.dispense !== null && event.hl7Message === null) {
    return { kind: 'dispense', contentType: 'application/json', body: JSON.stringify(withoutNulls(event.dispense)) };
  }
  const reason = `event ${event.eventId}: exactly one of hl7Message and dispense must be set (${event.hl7Message === null ? 'neither is' : 'both are'})`;
  return { kind: 'bad', outcome: 'invalid_dispense', reason, contentType: 'application/json', body: JSON.stringify(withoutNulls(event)) };
}
