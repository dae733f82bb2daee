// Callbacks that arrive together are recorded by one statement and one transaction. At callback
// rates the commit (a WAL flush) and the round trip per callback are what Postgres and the service's
// socket writes spend most on; a batch pays for them once.
//
// No timer for company: an event is sent at once when no statement is running, so a callback that
// arrives alone waits for nothing. While one runs, events queue, and the statement that follows takes
// up to `maxBatchSize` of them. The queue is thus as long as one statement's time at the arrival
// rate, and a batch's latency is the statement's, not a wait for company. One statement at a time
// makes the batches as large as the arrival rate allows: at 1,000 callbacks a second, Postgres spent
// a fifth less CPU on them than with two statements of one or two callbacks each (docs/benchmarks.md,
// Callbacks), on cores it shares with the service.
//
// A statement that stalls (a row the sender holds, a checkpoint's flush) must not hold every callback
// behind it: once the one running has taken `stallMs`, the next starts beside it, up to
// `maxInFlight` at once.
//
// The failure unit stays one callback: an event Postgres refuses is rolled back alone inside the
// statement (sql/008_record_status_events.sql) and its promise rejects, so its request answers 5xx
// and VA Notify retries it, while the batch's other events are committed and answered 200. When the
// statement itself fails (the database unreachable), every event of the batch rejects: none of them
// was committed, and each is retried.
import type { SqlHandle } from '../db/connect.ts';
import { recordStatusEvents, type RecordOptions, type StatusEvent, type StatusEventResult, type StatusLog } from './repository.ts';

export interface StatusEventBatcherOptions extends Omit<RecordOptions, 'log'> {
  /** Statements running at once at most, when those running have stalled (`stallMs`). */
  maxInFlight?: number;
  /**
   * How long the statement that started last may run before the next starts beside it, in ms. Well
   * above a statement's usual time at callback rates (3 ms at the median, 13 ms at the 99th
   * percentile beside the service on two cores), well below what a callback may wait.
   */
  stallMs?: number;
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
  readonly #stallMs: number;
  readonly #maxBatchSize: number;
  #queue: Queued[] = [];
  /** When each running statement started (performance.now()), oldest first. */
  #running: number[] = [];
  #stallTimer: NodeJS.Timeout | undefined;

  constructor(sql: SqlHandle, options: StatusEventBatcherOptions) {
    const { maxInFlight = 2, stallMs = 20, maxBatchSize = 100, ...record } = options;
    if (!(maxInFlight >= 1 && maxBatchSize >= 1 && stallMs >= 0))
      throw new RangeError('maxInFlight and maxBatchSize must be at least 1, stallMs at least 0');
    this.#sql = sql;
    this.#options = record;
    this.#maxInFlight = maxInFlight;
    this.#stallMs = stallMs;
    this.#maxBatchSize = maxBatchSize;
  }

  /** Statements running now (for tests and metrics). */
  get inFlight(): number {
    return this.#running.length;
  }

  /**
   * Records one event with whatever else is waiting, and resolves with its own outcome once the
   * statement that recorded it has committed. The outcome is logged to `log`, as recordStatusEvent does.
   */
  record(event: StatusEvent, log?: StatusLog): Promise<StatusEventResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ event, log, resolve, reject });
      this.#next();
    });
  }

  /** Starts a statement for what is queued if no statement runs, or the latest has stalled; else waits for either. */
  #next(): void {
    if (this.#queue.length === 0 || this.#running.length >= this.#maxInFlight) return;
    const latest = this.#running.at(-1);
    const stalledIn = latest === undefined ? 0 : latest + this.#stallMs - performance.now();
    if (stalledIn <= 0) {
      this.#send();
      return;
    }
    // A statement that ends first starts the next itself (#settled) and clears this.
    this.#stallTimer ??= setTimeout(() => {
      this.#stallTimer = undefined;
      this.#next();
    }, stalledIn);
  }

  #send(): void {
    const batch = this.#queue.splice(0, this.#maxBatchSize);
    const started = performance.now();
    this.#running.push(started);
    recordStatusEvents(this.#sql, batch, this.#options).then(
      (results) => {
        this.#settled(started);
        results.forEach((result, index) => {
          const { resolve, reject } = batch[index]!;
          if (result instanceof Error) reject(result);
          else resolve(result);
        });
      },
      (error: unknown) => {
        this.#settled(started);
        for (const { reject } of batch) reject(error);
      },
    );
    // What this batch left behind (more than maxBatchSize queued) goes once this one stalls, as if
    // it had come while this one ran.
    this.#next();
  }

  /**
   * Frees the slot before the batch's callers hear back, so that what they record next finds it
   * free; what queued meanwhile goes now if no other statement runs or the other has stalled, else
   * once it stalls or ends.
   */
  #settled(started: number): void {
    this.#running.splice(this.#running.indexOf(started), 1);
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#next();
  }
}
