// The benchmark's other processes (the service, the sandboxes, a bare Fastify) run as children with
// an IPC channel: each measures its own resources, and the driver's load never counts as theirs.
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { onInterrupt } from './cleanup.ts';

export interface ChildRequest {
  id: number;
  type: string;
  [field: string]: unknown;
}

/** A child's answers: `{ id, result }` or `{ id, error }`; its first message is `{ type: 'ready', ... }`. */
export interface Child<Ready> {
  ready: Ready;
  pid: number;
  call<R = unknown>(type: string, fields?: Record<string, unknown>): Promise<R>;
  /** Asks the child to stop, then waits for it to exit (killed after timeoutMs). */
  stop(timeoutMs?: number): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** File that receives the child's stdout (its logs); discarded when not given. */
  stdoutFile?: string;
  execArgv?: string[];
}

export async function startChild<Ready>(file: string, options: StartOptions = {}): Promise<Child<Ready>> {
  const stdoutFd = options.stdoutFile === undefined ? 'ignore' : openSync(options.stdoutFile, 'a');
  const child: ChildProcess = fork(file, [], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', stdoutFd, 'inherit', 'ipc'],
    execArgv: [...process.execArgv, '--no-warnings', ...(options.execArgv ?? [])],
  });
  if (typeof stdoutFd === 'number') closeSync(stdoutFd);
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  let nextId = 1;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await new Promise<Ready>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${file} exited with code ${code} before it was ready`)));
    child.on('message', (message: { type?: string; id?: number; result?: unknown; error?: string }) => {
      if (message.type === 'ready') {
        resolve(message as Ready);
        return;
      }
      const waiter = message.id === undefined ? undefined : pending.get(message.id);
      if (!waiter) return;
      pending.delete(message.id!);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message.result);
    });
  });
  const forget = onInterrupt(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  void exited.then((code) => {
    forget();
    for (const waiter of pending.values()) waiter.reject(new Error(`${file} exited with code ${code}`));
    pending.clear();
  });
  return {
    ready,
    pid: child.pid!,
    call<R>(type: string, fields: Record<string, unknown> = {}) {
      const id = nextId++;
      return new Promise<R>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
        child.send({ ...fields, id, type } satisfies ChildRequest);
      });
    },
    async stop(timeoutMs = 30_000) {
      if (child.exitCode !== null) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.send({ id: 0, type: 'stop' });
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The child side: answers requests with the given handlers; `stop` runs `onStop` and exits. */
export function serveParent(handlers: Record<string, (request: ChildRequest) => unknown>, onStop: () => Promise<void>): void {
  process.on('message', (request: ChildRequest) => {
    if (request.type === 'stop') {
      void onStop().finally(() => process.exit(0));
      return;
    }
    const handler = handlers[request.type];
    Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`no handler for ${request.type}`);
        return handler(request);
      })
      .then(
        (result) => process.send!({ id: request.id, result }),
        (error: unknown) => process.send!({ id: request.id, error: String((error as Error)?.stack ?? error) }),
      );
  });
  // The parent gone (a crash, ^C) means nobody will ever ask this process to stop.
  process.on('disconnect', () => void onStop().finally(() => process.exit(0)));
}

/**
 * Peak resident set size of this process since it started, in bytes: the kernel's high-water mark
 * of its memory (VmHWM). Not getrusage's maxrss: Linux carries that across fork and exec, so a
 * child would report its parent's (the driver's) size as its own.
 */
export function peakRssBytes(): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (match) return Number(match[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return process.resourceUsage().maxRSS * 1024;
}
