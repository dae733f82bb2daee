// Callbacks that arrive together are recorded by one statement and one transaction. At callback
// rates the commit (a WAL flush) and the round trip per callback are what Postgres and the service's
// socket writes spend most on; a batch pays for them once.
//
// No timer: an event is sent at once while fewer than `maxInFlight` statements are running, so a
// callback that arrives alone waits for nothing. Events queue only while every slot is busy, and the
// next free slot takes up to `maxBatchSize` of them. The queue is thus as long as one statement's
// time at the arrival rate, and a batch's latency is the statement's, not a wait for company.
//
// The failure unit stays one callback: an event Postgres refuses is rolled back alone inside the
// statement (sql/008_record_status_events.sql) and its promise rejects, so its request answers 5xx
// and VA Notify retries it, while the batch's other events are committed and answered 200. When the
// statement itself fails (the database unreachable), every event of the batch rejects: none of them
// was committed, and each is retried.
import type { SqlHandle } from '../db/connect.ts';
import { recordStatusEvents, type RecordOptions, type StatusEvent, type StatusEventResult, type StatusLog } from './repository.ts';

export interface StatusEventBatcherOptions extends Omit<RecordOptions, 'log'> {
  /**
   * Statements running at once; events queue only while this many are in flight. 2 by default:
   * fewer backends competing for the cores, and larger batches, so fewer commits, which keeps the
   * callbacks' tail latency lower than more statements in flight would.
   */
  maxInFlight?: number;
  /** Events in one statement at most. */
  maxBatchSize?: number;
}

interface Queued {
  event: StatusEvent;
  log?: StatusLog;
  resolve: (result: StatusEventResult) => void;
  reject: (error: unknown) => void;
}

export class StatusEventBatcher {
  readonly #sql: SqlHandle;
  readonly #options: Omit<RecordOptions, 'log'>;
  readonly #maxInFlight: number;
  readonly #maxBatchSize: number;
  #queue: Queued[] = [];
  #inFlight = 0;

  constructor(sql: SqlHandle, options: StatusEventBatcherOptions) {
    const { maxInFlight = 2, maxBatchSize = 100, ...record } = options;
    if (!(maxInFlight >= 1 && maxBatchSize >= 1)) throw new RangeError('maxInFlight and maxBatchSize must be at least 1');
    this.#sql = sql;
    this.#options = record;
    this.#maxInFlight = maxInFlight;
    this.#maxBatchSize = maxBatchSize;
  }

  /** Statements running now (for tests and metrics). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Records one event with whatever else is waiting, and resolves with its own outcome once the
   * statement that recorded it has committed. The outcome is logged to `log`, as recordStatusEvent does.
   */
  record(event: StatusEvent, log?: StatusLog): Promise<StatusEventResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ event, log, resolve, reject });
      if (this.#inFlight < this.#maxInFlight) this.#send();
    });
  }

  #send(): void {
    const batch = this.#queue.splice(0, this.#maxBatchSize);
    if (batch.length === 0) return;
    this.#inFlight += 1;
    recordStatusEvents(this.#sql, batch, this.#options).then(
      (results) => {
        this.#settled();
        results.forEach((result, index) => {
          const { resolve, reject } = batch[index]!;
          if (result instanceof Error) reject(result);
          else resolve(result);
        });
      },
      (error: unknown) => {
        this.#settled();
        for (const { reject } of batch) reject(error);
      },
    );
  }

  /**
   * Frees the slot before the batch's callers hear back, so that what they record next finds it
   * free; what queued while every slot was busy goes now, in the slot just freed.
   */
  #settled(): void {
    this.#inFlight -= 1;
    if (this.#queue.length > 0) this.#send();
  }
}
