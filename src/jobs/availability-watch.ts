// Tells an outage of VA Notify or MHV's AAL from one request's bad luck, for the sender and the AAL
// worker. Each item's quick retries span a few seconds; when items one after another use them all
// with no answer in between, the service is down. Charging each item an attempt then would fail
// every queued item within the span of its durable retries (about 15 minutes for an email, 4 hours
// for an AAL event), so from the third such item on the job pauses on every instance and hands the
// items back uncharged. After a pause, until something is accepted, the first such item is enough:
// an outage of any length costs at most two items an attempt on each instance, not two per probe.

/** Items in a row whose tries all went unanswered (5xx, timeouts, refused connections). */
const UnavailableAfterFailures = 3;

export class AvailabilityWatch {
  #failuresInARow = 0;
  #afterPause: boolean;
  readonly #onConfirmedUp: () => Promise<void>;

  /**
   * `afterPause`: the last pause has ended with nothing accepted since. `onConfirmedUp` forgets that
   * pause, once, when something is accepted.
   */
  constructor(afterPause: boolean, onConfirmedUp: () => Promise<void>) {
    this.#afterPause = afterPause;
    this.#onConfirmedUp = onConfirmedUp;
  }

  /** The service answered (accepted the item, or refused it for the item's own sake): it is up. */
  async answered(): Promise<void> {
    this.#failuresInARow = 0;
    if (this.#afterPause) {
      this.#afterPause = false;
      // Forgetting the pause only spares the next run its probe: a failed write costs nothing more,
      // and must not fail the item whose outcome is already recorded.
      await this.#onConfirmedUp().catch(() => {});
    }
  }

  /**
   * An item's tries all went unanswered; true when the service now looks down. Tries cut short by a
   * shutdown (`stopping`) say nothing about the service and are not counted.
   */
  failed(stopping: boolean): boolean {
    if (stopping) return false;
    this.#failuresInARow += 1;
    return this.#afterPause || this.#failuresInARow >= UnavailableAfterFailures;
  }
}
