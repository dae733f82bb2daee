// Stores a batch of decoded event-bus records at once, set-based (storePositionedBodies): every
// record's body kept in inbound_message with its topic, partition and offset, masked, with the
// outcome of its parse, and the dispenses of every record, in one statement when all are new, else
// in one transaction. A record whose position is stored already (a redelivery) is skipped: the
// batch's offsets are committed to Kafka only after this commits.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Sql } from '../db/connect.ts';
import {
  readPositionedBodies,
  storePositionedBodies,
  type IngestOutcomeCounts,
  type PositionedBody,
  type ReadPositionedBodies,
} from '../ingest/ingest.ts';
import type { EventPosition } from '../ingest/repository.ts';
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

/** A batch's records masked and parsed, ready to store (again, if an attempt fails). */
export interface PreparedBatch {
  records: readonly BatchRecord[];
  /** The records as the ingest's positioned bodies: read again if the batch is stored the long way. */
  bodies: readonly PositionedBody[];
  read: ReadPositionedBodies;
}

/** A batch's records as the ingest's positioned bodies. */
function positionedBodies(records: readonly BatchRecord[]): PositionedBody[] {
  return records.map(
    ({ position, decoded }): PositionedBody => ({
      source: 'event-bus',
      contentType: decoded.contentType,
      body: decoded.body,
      event: position,
      ...(decoded.kind === 'bad' && { rejectedFor: decoded.reason }),
    }),
  );
}

/**
 * The CPU work of storing a batch, masking and parsing its records, done a few records at a time so
 * that a batch (some tens of milliseconds of work) never holds up the event loop: a callback that
 * arrives meanwhile is answered, and the batch being stored is sent on as soon as Postgres answers.
 */
export async function prepareBatch(records: readonly BatchRecord[]): Promise<PreparedBatch> {
  const bodies = positionedBodies(records);
  return { records, bodies, read: await readPositionedBodies(bodies, nextTurn) };
}

export async function storeBatch(sql: Sql, batch: PreparedBatch | readonly BatchRecord[]): Promise<StoredBatch> {
  const { records, bodies, read } = 'read' in batch ? batch : await prepareBatch(batch);
  const { results, counts } = await storePositionedBodies(sql, bodies, read, nextTurn);
  const outcomes: Record<RecordOutcome, number> = {
    stored: 0,
    duplicate: 0,
    redelivered: 0,
    not_avro: 0,
    unknown_schema: 0,
    undecodable: 0,
    invalid_dispense: 0,
  };
  results.forEach((result, i) => {
    const decoded = records[i]!.decoded;
    if (result.kind === 'stored-before') outcomes.redelivered++;
    else if (decoded.kind === 'bad') outcomes[decoded.outcome]++;
    else if (result.outcome === 'rejected') outcomes.invalid_dispense++;
    else if (result.storedNew === 0 && result.events > 0) outcomes.duplicate++;
    else outcomes.stored++;
  });
  return { outcomes, dispenses: counts };
}
