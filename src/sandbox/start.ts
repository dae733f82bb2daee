// With no VA Notify or AAL settings, the service runs against built-in sandbox servers that follow
// the same contracts, so that a newcomer sees the whole pipeline work; they send no real email and
// write to no real audit log, and the log says so.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { startSandboxAal, type SandboxAal } from './aal.ts';

export interface Sandboxes {
  urls: { vaNotify?: string; aal?: string };
  close(): Promise<void>;
}

export async function startSandboxesFor(config: Config, log: Logger): Promise<Sandboxes> {
  let aal: SandboxAal | undefined;
  if (config.AAL_BASE_URL === undefined) {
    aal = await startSandboxAal({ log: log.child({ sandbox: 'aal' }) });
    log.warn({ url: aal.url }, 'AAL_BASE_URL is not set: using the built-in sandbox AAL; no real Account Activity Log event is written');
  }
  return {
    urls: { aal: aal?.url },
    async close() {
      await aal?.close();
    },
  };
}
