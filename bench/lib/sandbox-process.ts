// The sandbox VA Notify and AAL in a process of their own, so that their work and memory never
// count as the service's. The driver reads their counters over IPC.
import { startSandboxAal } from '../../src/sandbox/aal.ts';
import { startSandboxVaNotify, type SandboxFaults, type SandboxVaNotifyOptions } from '../../src/sandbox/va-notify.ts';
import { peakRssBytes, serveParent } from './child.ts';

const options = JSON.parse(process.env.BENCH_SANDBOX_OPTIONS ?? '{}') as SandboxVaNotifyOptions;
const vaNotify = await startSandboxVaNotify(options);
const aal = await startSandboxAal();

export interface SandboxCounts {
  sendsAccepted: number;
  sendsRejected: Record<number, number>;
  callbacksPosted: number;
  callbacksFailed: number;
  aalPostsAccepted: number;
  aalPostsRejected: number;
  aalSessionsIssued: number;
}

serveParent(
  {
    setCallbackUrl: (request) => vaNotify.setCallbackUrl((request.url as string | null) ?? null),
    setFaults: (request) => Object.assign(vaNotify.state.faults, request.faults as Partial<SandboxFaults>),
    whenIdle: () => vaNotify.whenIdle(),
    counts: (): SandboxCounts => ({
      sendsAccepted: vaNotify.state.counters.sendsAccepted,
      sendsRejected: vaNotify.state.counters.sendsRejected,
      callbacksPosted: vaNotify.state.counters.callbacksPosted,
      callbacksFailed: vaNotify.state.counters.callbacksFailed,
      aalPostsAccepted: aal.state.postsAccepted,
      aalPostsRejected: aal.state.postsRejected,
      aalSessionsIssued: aal.state.sessionsIssued,
    }),
    // The sandbox keeps every callback attempt for tests; a long run needs none of them.
    forgetCallbacks: () => {
      vaNotify.state.callbacks.length = 0;
      aal.state.requests.length = 0;
      aal.state.events.length = 0;
    },
    peakRss: () => peakRssBytes(),
  },
  async () => {
    await vaNotify.close();
    await aal.close();
  },
);
process.send!({ type: 'ready', vaNotify: vaNotify.url, aal: aal.url });
