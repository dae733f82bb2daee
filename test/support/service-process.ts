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
    const ready = await fetch(`${url}/health/ready`).then((r) => r.ok, () => false);
    if (ready) return { child, url, output: () => output, exited };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`service did not become ready:\n${output}`);
}
