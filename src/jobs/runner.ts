// Runs the service's jobs: on demand (the trigger endpoint) and on timers, and stops them in order.
// Every job is safe to run on many instances at once (each claims its work with row locks), so the
// runner only has to keep one instance's own runs tidy: no overlapping timer runs, a wake-up hint,
// and a shutdown that stops claiming, lets in-flight work finish, then returns.
import type { Logger } from 'pino';

export type JobName = 'grouping' | 'send' | 'aal' | 'sweep' | 'retention';

/**
 * A job gets a signal that aborts at shutdown (it must stop claiming new work and release what it
 * holds) and the logger of whoever asked for the run: a trigger's request logger carries its request id.
 */
export type Job<R = unknown> = (signal: AbortSignal, log: Logger) => Promise<R>;

export interface JobRunner {
  /** Runs a job now, logging with `runLog` (the runner's logger when not given). */
  run<R>(name: JobName, runLog?: Logger): Promise<R>;
  /** Starts the timers; `intervals` in seconds. */
  start(intervals: Partial<Record<JobName, number>>): void;
  /**
   * Runs a job's timer now (a hint that work arrived, or that a run stopped at its batch size with
   * more to do); during a run, the next run starts as soon as it ends. Ignored when not started.
   */
  wake(name: JobName): void;
  /** Stops the timers, aborts the jobs' signal and waits for in-flight runs (at most graceMs). */
  stop(graceMs: number): Promise<void>;
  readonly stopping: boolean;
}

export function createJobRunner(jobs: Partial<Record<JobName, Job>>, log: Logger): JobRunner {
  const shutdown = new AbortController();
  const inFlight = new Set<Promise<unknown>>();
  const timers = new Map<JobName, { handle?: NodeJS.Timeout; seconds: number; running: boolean; again: boolean }>();
  let started = false;

  function run<R>(name: JobName, runLog: Logger = log): Promise<R> {
    const job = jobs[name] as Job<R> | undefined;
    if (!job) return Promise.reject(new Error(`no job named ${name}`));
    if (shutdown.signal.aborted) return Promise.reject(new Error('shutting down'));
    const promise = job(shutdown.signal, runLog);
    inFlight.add(promise);
    const forget = () => inFlight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  function schedule(name: JobName, delayMs: number) {
    const timer = timers.get(name);
    if (!timer || shutdown.signal.aborted) return;
    clearTimeout(timer.handle);
    timer.handle = setTimeout(() => void tick(name), delayMs);
    timer.handle.unref();
  }

  async function tick(name: JobName) {
    const timer = timers.get(name);
    if (!timer || timer.running || shutdown.signal.aborted) return;
    timer.running = true;
    timer.again = false;
    try {
      await run(name);
    } catch (error) {
      if (!shutdown.signal.aborted) log.error({ err: error, job: name }, 'job run failed; the timer tries again');
    } finally {
      timer.running = false;
      schedule(name, timer.again ? 0 : timer.seconds * 1000);
    }
  }

  return {
    run,
    start(intervals) {
      if (started) return;
      started = true;
      for (const [name, seconds] of Object.entries(intervals) as [JobName, number][]) {
        if (!jobs[name]) continue;
        timers.set(name, { seconds, running: false, again: false });
        // Spread the first runs so that instances started together do not run in step.
        schedule(name, Math.floor(Math.random() * Math.min(seconds, 5) * 1000));
      }
    },
    wake(name) {
      const timer = timers.get(name);
      if (!timer) return;
      if (timer.running) timer.again = true;
      else schedule(name, 0);
    },
    async stop(graceMs) {
      if (shutdown.signal.aborted) return;
      shutdown.abort(new Error('shutting down'));
      for (const timer of timers.values()) clearTimeout(timer.handle);
      if (inFlight.size === 0) return;
      log.info({ runs: inFlight.size }, 'waiting for in-flight job runs to finish');
      let timeout: NodeJS.Timeout | undefined;
      const deadline = new Promise<'timeout'>((resolve) => {
        timeout = setTimeout(() => resolve('timeout'), graceMs);
      });
      const settled = Promise.allSettled([...inFlight]).then(() => 'done' as const);
      const outcome = await Promise.race([settled, deadline]);
      clearTimeout(timeout);
      if (outcome === 'timeout')
        log.warn(
          { runs: inFlight.size },
          'job runs still in flight after the grace period; their leases will expire and another instance recovers them',
        );
    },
    get stopping() {
      return shutdown.signal.aborted;
    },
  };
}
