// With no VA Notify or AAL settings, the service runs against built-in sandbox servers that follow
// the same contracts, so that a newcomer sees the whole pipeline work; they send no real email and
// write to no real audit log, and the log says so.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { startSandboxAal, type SandboxAal } from './aal.ts';
import { SandboxDefaults, startSandboxVaNotify, type SandboxVaNotify } from './va-notify.ts';

export interface Sandboxes {
  urls: { vaNotify?: string; aal?: string };
  /** Tells the sandbox VA Notify where this service's callback endpoint listens. */
  listening(serviceUrl: string): void;
  close(): Promise<void>;
}

export async function startSandboxesFor(config: Config, log: Logger): Promise<Sandboxes> {
  let vaNotify: SandboxVaNotify | undefined;
  if (config.VA_NOTIFY_BASE_URL === undefined && config.DELIVERY_MODE === 'live') {
    vaNotify = await startSandboxVaNotify({
      callbackToken: config.VA_NOTIFY_CALLBACK_TOKENS[0] ?? SandboxDefaults.callbackToken,
      callbackDelayMs: config.SANDBOX_CALLBACK_DELAY_MS,
      log: log.child({ sandbox: 'va-notify' }),
    });
    log.warn(
      { url: vaNotify.url },
      'VA_NOTIFY_BASE_URL is not set: using the built-in sandbox VA Notify; NO REAL EMAIL IS SENT (outcomes by ICN: see README)',
    );
  }
  let aal: SandboxAal | undefined;
  if (config.AAL_BASE_URL === undefined) {
    aal = await startSandboxAal({ log: log.child({ sandbox: 'aal' }) });
    log.warn({ url: aal.url }, 'AAL_BASE_URL is not set: using the built-in sandbox AAL; no real Account Activity Log event is written');
  }
  return {
    urls: { vaNotify: vaNotify?.url, aal: aal?.url },
    listening(serviceUrl) {
      vaNotify?.setCallbackUrl(`${serviceUrl}/v1/va-notify/callbacks`);
    },
    async close() {
      await vaNotify?.close();
      await aal?.close();
    },
  };
}
