// Runs the service as a real process (node src/server.ts, the same start path as npm start and the
// container), for tests of signals and of several instances on one database.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { startCommand } from '../../scripts/start-command.ts';
import { freePortBelowEphemeralRange } from '../../src/db/embedded.ts';
import { SandboxDefaults } from '../../src/sandbox/va-notify.ts';
import { callbackToken, internalToken } from './app.ts';
import { repoRoot as root } from './cli.ts';

export interface ServiceProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Environment for an instance that talks to an external sandbox VA Notify (shared by instances). */
export function sandboxVaNotifyEnv(vaNotifyUrl: string): Record<string, string> {
  return {
    VA_NOTIFY_BASE_URL: vaNotifyUrl,
    VA_NOTIFY_SERVICE_ID: SandboxDefaults.serviceId,
    VA_NOTIFY_API_KEY: SandboxDefaults.secret,
    VA_NOTIFY_TEMPLATE_ID: SandboxDefaults.templateId,
  };
}

/** Starts `node src/server.ts`; ready when /health/ready answers 200 within readyTimeoutMs (30 s unless given). */
export async function startServiceProcess(env: Record<string, string>, options: { readyTimeoutMs?: number } = {}): Promise<ServiceProcess> {
  const port = await freePortBelowEphemeralRange();
  let output = '';
  const { nodeFlags, entry } = startCommand();
  const child = spawn(process.execPath, [...nodeFlags, entry], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      PORT: String(port),
      HOST: '127.0.0.1',
      INTERNAL_API_TOKENS: internalToken,
      VA_NOTIFY_CALLBACK_TOKENS: callbackToken,
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const url = `http://127.0.0.1:${port}`;
  // Ready when /health/ready answers 200; give up if the process exits first.
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`service exited during startup:\n${output}`);
    const ready = await fetch(`${url}/health/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) return { child, url, output: () => output, exited };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`service did not become ready:\n${output}`);
}

export interface SupervisedService {
  /** The instance running now (the one started last). */
  current(): ServiceProcess;
  /** Every instance that exited on its own: how it ended and everything it wrote. */
  exits: { code: number | null; signal: NodeJS.Signals | null; output: string }[];
  /** Stops restarting and kills the instance running now. */
  stop(): Promise<void>;
}

/**
 * Runs the service as production's restart policy does: an instance that exits on its own is started
 * again, at once, with the same settings.
 */
export async function superviseServiceProcess(
  env: Record<string, string>,
  options: { readyTimeoutMs?: number } = {},
): Promise<SupervisedService> {
  let stopping = false;
  let current = await startServiceProcess(env, options);
  const exits: SupervisedService['exits'] = [];
  let restarting: Promise<void> = Promise.resolve();
  let restartFailure: unknown;
  const watch = (instance: ServiceProcess) => {
    void instance.exited.then((exit) => {
      if (stopping) return;
      exits.push({ ...exit, output: instance.output() });
      restarting = startServiceProcess(env, options).then(
        (next) => {
          current = next;
          if (stopping) next.child.kill('SIGKILL');
          else watch(next);
        },
        (error: unknown) => {
          restartFailure = error;
        },
      );
    });
  };
  watch(current);
  return {
    current: () => current,
    exits,
    async stop() {
      stopping = true;
      await restarting;
      if (current.child.exitCode === null && current.child.signalCode === null) current.child.kill('SIGKILL');
      await current.exited;
      if (restartFailure) throw restartFailure;
    },
  };
}
