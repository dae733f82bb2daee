// Stores a batch of decoded event-bus records in one transaction: each record's body kept in
// inbound_message with its topic, partition and offset before it is parsed, then its dispenses
// through the same ingest as POST /v1/dispenses. A record whose position is stored already (a
// redelivery) is skipped: the batch's offsets are committed to Kafka only after this commits.
import type { Sql, SqlHandle } from '../db/connect.ts';
import { ingestHl7, ingestJson, type IngestOutcomeCounts } from '../ingest/ingest.ts';
import { maskSsns } from '../ingest/mask.ts';
import { insertInboundMessage, recordInboundOutcome, type EventPosition } from '../ingest/repository.ts';
import type { DecodedRecord, RecordOutcome } from './records.ts';

export interface BatchRecord {
  position: EventPosition;
  decoded: DecodedRecord;
}

export interface StoredBatch {
  outcomes: Record<RecordOutcome, number>;
  /** Dispense outcomes, for `rx_dispenses_ingested_total`, as the HTTP ingest counts them. */
  dispenses: IngestOutcomeCounts;
}

export async function storeBatch(sql: Sql, topic: string, records: readonly BatchRecord[]): Promise<StoredBatch> {
  const outcomes: Record<RecordOutcome, number> = {
    stored: 0, duplicate: 0, redelivered: 0, not_avro: 0, unknown_schema: 0, undecodable: 0, invalid_dispense: 0,
  };
  const dispenses: IngestOutcomeCounts = { inserted: 0, cancelled: 0, unprocessable: 0, duplicate: 0, rejected: 0 };
  await sql.begin(async (tx) => {
    // Counted afresh on each attempt: a batch retried after a failed commit counts once.
    for (const key of Object.keys(outcomes) as RecordOutcome[]) outcomes[key] = 0;
    for (const key of Object.keys(dispenses) as (keyof IngestOutcomeCounts)[]) dispenses[key] = 0;
    const stored = await storedPositions(tx, topic, records);
    // Every record's statements are issued at once: on the transaction's one connection postgres.js
    // sends them back to back (each record's in order), so the batch costs about one round trip
    // per statement kind rather than one per statement.
    await Promise.all(records.map(async ({ position, decoded }) => {
      if (stored.has(`${position.partition}:${position.offset}`)) {
        outcomes.redelivered++;
        return;
      }
      if (decoded.kind === 'bad') {
        const id = await insertInboundMessage(tx, { source: 'event-bus', contentType: decoded.contentType, maskedBody: maskSsns(decoded.body), event: position });
        await recordInboundOutcome(tx, id, { outcome: 'rejected', messageCount: 0, error: decoded.reason });
        outcomes[decoded.outcome]++;
        return;
      }
      const input = { source: 'event-bus', contentType: decoded.contentType, body: decoded.body, event: position };
      const result = decoded.contentType === 'application/hl7-v2' ? await ingestHl7(tx, input) : await ingestJson(tx, input);
      for (const [outcome, count] of Object.entries(result.counts) as [keyof IngestOutcomeCounts, number][]) dispenses[outcome] += count;
      const { inserted, duplicate } = result.counts;
      const storedNew = inserted + result.counts.cancelled + result.counts.unprocessable;
      if (result.outcome === 'rejected') outcomes.invalid_dispense++;
      else if (storedNew === 0 && duplicate > 0) outcomes.duplicate++;
      else outcomes.stored++;
    }));
  });
  return { outcomes, dispenses };
}

/** The positions of the batch that inbound_message holds already. */
async function storedPositions(tx: SqlHandle, topic: string, records: readonly BatchRecord[]): Promise<Set<string>> {
  if (records.length === 0) return new Set();
  const partitions = records.map((r) => r.position.partition);
  const offsets = records.map((r) => String(r.position.offset));
  const rows = await tx<{ event_partition: number; event_offset: string }[]>`
    select m.event_partition, m.event_offset::text
      from unnest(${partitions}::int[], ${offsets}::bigint[]) as r (event_partition, event_offset)
      join inbound_message m
        on m.event_topic = ${topic} and m.event_partition = r.event_partition and m.event_offset = r.event_offset`;
  return new Set(rows.map((row) => `${row.event_partition}:${row.event_offset}`));
}
