// The loop of every job that claims rows and then calls out for each (the sender, the AAL worker and
// the sweep's steps): the claim is committed first; then each item is worked, outside any
// transaction, a few at a time, and records its own outcome; the run stops taking items on shutdown
// or when the work says so (a pause), and hands the items it never started back to its caller.

/**
 * What became of a claimed item, in the words every job's answer and metrics share besides its own
 * success (sent, recovered, posted): `retried` (due again later, with backoff), `failed` (ended for
 * good), `released` (handed back unworked with its attempt refunded, or left to a newer claim).
 */
export type ClaimOutcome = 'retried' | 'failed' | 'released';

/** How a run works a batch. */
export interface BatchWork<T> {
  /** Items worked at once. */
  concurrency: number;
  /** Works one item and records its outcome. */
  work: (item: T) => Promise<void>;
  /** Asked before each item: true leaves it, and every item after it, unstarted. */
  stopped: () => boolean;
  /**
   * An item whose work threw. Absent, the first error stops every lane from taking another item and
   * comes back as `failure`. Given, it is told of each error and the run goes on.
   */
  onError?: (item: T, error: unknown) => void;
}

export interface BatchEnd<T> {
  /** The items no lane started, in their order: the caller hands their claims back. */
  unstarted: T[];
  /** The first error of a run without onError, once every lane has ended. */
  failure?: { error: unknown };
}

/** Works the claimed items on `concurrency` lanes until every one is worked, the run is stopped, or an item fails. */
export async function workClaimedBatch<T>(items: readonly T[], how: BatchWork<T>): Promise<BatchEnd<T>> {
  const queue = [...items];
  let failure: { error: unknown } | undefined;
  const lane = async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
      if (failure !== undefined || how.stopped()) {
        queue.unshift(item);
        return;
      }
      try {
        await how.work(item);
      } catch (error) {
        if (how.onError === undefined) failure ??= { error };
        else how.onError(item, error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(how.concurrency, items.length) }, lane));
  return { unstarted: queue, failure };
}
