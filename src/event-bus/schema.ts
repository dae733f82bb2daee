// The proposed Avro schema of CMOP dispense events on the VA Enterprise Event Bus, and Confluent's
// wire format: byte 0 the magic 0x00, bytes 1-4 the registry's schema id (big-endian), then the
// Avro binary body. docs/event-bus.md explains the schema's choices.
import avro from 'avsc';

export const DispenseEventSchema = {
  type: 'record',
  name: 'CmopMedicationDispense',
  namespace: 'gov.va.mhv.rx',
  doc: 'One CMOP medication dispense event: the HL7 v2 message CMOP sent, or the same dispense as canonical fields. Exactly one of hl7Message and dispense is set.',
  fields: [
    { name: 'eventId', type: 'string', doc: "the producer's id of this event (HL7 MSH-10, or the JSON messageId)" },
    { name: 'producedAt', type: { type: 'long', logicalType: 'timestamp-millis' }, doc: 'when the producer published it' },
    { name: 'hl7Message', type: ['null', 'string'], default: null, doc: 'the HL7 v2 message(s) as CMOP sent them, segments ended by CR' },
    {
      name: 'dispense',
      default: null,
      type: [
        'null',
        {
          type: 'record',
          name: 'DispenseFields',
          doc: 'the canonical JSON dispense event of POST /v1/dispenses, field for field',
          fields: [
            { name: 'messageId', type: ['null', 'string'], default: null },
            { name: 'stationNumber', type: 'string' },
            {
              name: 'patient',
              type: {
                type: 'record',
                name: 'Patient',
                fields: [
                  { name: 'icn', type: 'string' },
                  { name: 'mhvCorrelationId', type: ['null', 'string'], default: null },
                ],
              },
            },
            {
              name: 'prescription',
              type: {
                type: 'record',
                name: 'Prescription',
                fields: [
                  { name: 'rxNumber', type: 'string' },
                  { name: 'fillNumber', type: 'int' },
                  { name: 'drugName', type: ['null', 'string'], default: null },
                  { name: 'ndc', type: ['null', 'string'], default: null },
                  { name: 'quantity', type: ['null', 'double'], default: null },
                ],
              },
            },
            { name: 'dispensedAt', type: ['null', 'string'], default: null, doc: 'ISO 8601 with a zone' },
            { name: 'shippedAt', type: ['null', 'string'], default: null, doc: 'ISO 8601 with a zone' },
            { name: 'carrier', type: ['null', 'string'], default: null },
            { name: 'trackingNumber', type: 'string' },
          ],
        },
      ],
    },
  ],
} as const;

/** The key of each record: the event id, an Avro string (every record on the Event Bus is Avro, keys included). */
export const DispenseKeySchema = 'string';

/** What this service reads every record as; a writer's newer, backward-compatible schema resolves to it. */
export const dispenseReaderType = avro.Type.forSchema(DispenseEventSchema as unknown as avro.Schema);

export interface DispenseEventValue {
  eventId: string;
  /** Milliseconds since the epoch (timestamp-millis). */
  producedAt: number;
  hl7Message: string | null;
  dispense: Record<string, unknown> | null;
}

export const MagicByte = 0;

/** A Confluent-framed record: magic byte, schema id, Avro body. */
export function frame(schemaId: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(MagicByte, 0);
  header.writeInt32BE(schemaId, 1);
  return Buffer.concat([header, body]);
}

/** The schema id and Avro body of a Confluent-framed record, or why it is not one. */
export function unframe(value: Buffer | null | undefined): { schemaId: number; body: Buffer } | { error: string } {
  if (value === null || value === undefined || value.length === 0) return { error: 'empty record value' };
  if (value.length < 5) return { error: `not Confluent Avro: ${value.length} bytes, fewer than the 5-byte header` };
  if (value[0] !== MagicByte)
    return { error: `not Confluent Avro: first byte 0x${value[0]!.toString(16).padStart(2, '0')}, not the magic byte 0x00` };
  return { schemaId: value.readInt32BE(1), body: value.subarray(5) };
}

/** An Avro record's nullable fields left out when null, as the canonical JSON event leaves them out. */
export function withoutNulls(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  if (Array.isArray(value)) return value.map(withoutNulls);
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) if (field !== null) out[key] = withoutNulls(field);
  return out;
}
