// Load generators: autocannon for closed-loop HTTP load, a paced open-loop sender for offered loads, and a plain concurrency loop for in-process work.
import { Agent, request as httpRequest } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { startChild } from './child.ts';

export interface HttpLoad {
  url: string;
  /** Request bodies, used in turn; each request takes the next one. */
  bodies: string[];
  headers: Record<string, string>;
  connections: number;
  durationSeconds?: number;
  /** Stop after this many requests instead of after a duration. */
  amount?: number;
}

export interface HttpLoadResult {
  /** Requests answered 2xx per second over the run. */
  perSecond: number;
  answered: number;
  p50Ms: number;
  p99Ms: number;
  /** Anything but a 2xx answer: non-2xx, connection errors, timeouts. */
  failures: number;
  /** Bodies handed out (how far into `bodies` the run went). */
  bodiesUsed: number;
  /** Seconds from the first request to the last answer. */
  seconds: number;
}

export async function httpLoad(load: HttpLoad): Promise<HttpLoadResult> {
  let next = 0;
  const result = await autocannon({
    url: load.url,
    connections: load.connections,
    ...(load.amount === undefined ? { duration: load.durationSeconds ?? 10 } : { amount: load.amount }),
    timeout: 60,
    requests: [
      {
        method: 'POST',
        headers: load.headers,
        setupRequest: (request) => {
          request.body = load.bodies[next % load.bodies.length]!;
          next += 1;
          return request;
        },
      },
    ],
  });
  const ok = result['2xx'];
  return {
    perSecond: ok / result.duration,
    answered: ok,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    failures: result.non2xx + result.errors + result.timeouts,
    bodiesUsed: next,
    seconds: result.duration,
  };
}

/**
 * Posts every body once, `concurrency` requests in flight, and times it to the millisecond (autocannon's
 * `amount` runs end on its one-second tick, too coarse for a few hundred large bodies).
 */
export async function postAll(load: {
  url: string;
  bodies: string[];
  headers: Record<string, string>;
  concurrency: number;
}): Promise<HttpLoadResult> {
  const latencies: number[] = [];
  let answered = 0;
  let failures = 0;
  const ms = await concurrently(load.bodies.length, load.concurrency, async (i) => {
    const started = performance.now();
    try {
      const response = await fetch(load.url, { method: 'POST', headers: load.headers, body: load.bodies[i]! });
      await response.arrayBuffer();
      if (response.ok) answered += 1;
      else failures += 1;
    } catch {
      failures += 1;
    }
    latencies.push(performance.now() - started);
  });
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    perSecond: answered / (ms / 1000),
    answered,
    p50Ms: Math.round(at(0.5)),
    p99Ms: Math.round(at(0.99)),
    failures,
    bodiesUsed: load.bodies.length,
    seconds: ms / 1000,
  };
}

/** Runs work(i) for i in [0, total) with `concurrency` in flight; returns the elapsed milliseconds. */
export async function concurrently(total: number, concurrency: number, work: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  async function lane() {
    for (let i = next++; i < total; i = next++) await work(i);
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, lane));
  return performance.now() - started;
}

/** Runs `step` until it reports no more work; returns the elapsed milliseconds. */
export async function untilDone(step: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  while (await step()) {
    // keep going
  }
  return performance.now() - started;
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface PacedLoad {
  url: string;
  bodies: string[];
  headers: Record<string, string>;
  connections: number;
  ratePerSecond: number;
  durationSeconds: number;
}

/** A paced load's result, with the load generator's own event-loop delay while it ran. */
export type PacedLoadResult = HttpLoadResult & { generatorDelayP99Ms: number; generatorDelayMaxMs: number };

/**
 * An open-loop load: request i is due at start + i / ratePerSecond, sent when due whatever the
 * answers so far, over at most `connections` keep-alive sockets (a request finding them all busy
 * waits for one, and that wait counts). Latency runs from when a request was due, not from when it
 * left, so a stalled service cannot hide its backlog (no coordinated omission).
 *
 * autocannon's `overallRate` is not this: each connection sends its per-second quota back to back,
 * as fast as answers come, then pauses until the next second, so a "1,000/s" run is a saturation
 * burst at the top of every second and its latencies are those of saturation.
 */
export async function pacedLoad(load: PacedLoad): Promise<PacedLoadResult> {
  // Latency counts from when a request was due, so a stall of this process's own event loop (its
  // garbage collector, say) counts in it as if the service had been slow: reported beside it.
  const generatorDelay = monitorEventLoopDelay({ resolution: 1 });
  generatorDelay.enable();
  const agent = new Agent({ keepAlive: true, maxSockets: load.connections });
  const target = new URL(load.url);
  const total = Math.round(load.ratePerSecond * load.durationSeconds);
  const latencies: number[] = [];
  let answered = 0;
  let failures = 0;
  let sent = 0;
  const inFlight = new Set<Promise<void>>();
  const post = (body: string, dueAt: number) =>
    new Promise<void>((resolve) => {
      const request = httpRequest(
        { agent, method: 'POST', hostname: target.hostname, port: target.port, path: target.pathname, headers: load.headers },
        (response) => {
          response.resume();
          response.on('end', () => {
            latencies.push(performance.now() - dueAt);
            if (response.statusCode !== undefined && response.statusCode < 300) answered += 1;
            else failures += 1;
            resolve();
          });
        },
      );
      request.on('error', () => {
        failures += 1;
        resolve();
      });
      request.end(body);
    });
  const started = performance.now();
  while (sent < total) {
    const now = performance.now();
    // Every request due by now goes out now; the timer's granularity (about 1 ms) is all the batching.
    while (sent < total && started + (sent * 1000) / load.ratePerSecond <= now) {
      const dueAt = started + (sent * 1000) / load.ratePerSecond;
      const request = post(load.bodies[sent % load.bodies.length]!, dueAt);
      inFlight.add(request);
      void request.then(() => inFlight.delete(request));
      sent += 1;
    }
    await sleep(1);
  }
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  generatorDelay.disable();
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    perSecond: answered / seconds,
    answered,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    failures,
    bodiesUsed: sent,
    seconds,
    generatorDelayP99Ms: generatorDelay.percentile(99) / 1e6,
    generatorDelayMaxMs: generatorDelay.max / 1e6,
  };
}

/** A process of its own (load-process.ts) that runs {@link pacedLoad}s: one warm-up load warms it up too. */
export async function startLoadGenerator(): Promise<{ pacedLoad(load: PacedLoad): Promise<PacedLoadResult>; stop(): Promise<void> }> {
  const child = await startChild<Record<string, never>>(fileURLToPath(new URL('./load-process.ts', import.meta.url)));
  return { pacedLoad: (load) => child.call<PacedLoadResult>('pacedLoad', { load }), stop: () => child.stop() };
}
