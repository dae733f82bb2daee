// The paced load generator in a process of its own: the latency it measures counts from when each
// request was due, so a stall of its event loop counts as if the service had been slow. Here its
// heap holds nothing but the load, not the driver's fixtures (a day's bodies, say), whose garbage
// collections would pause it.
import { serveParent } from './child.ts';
import { pacedLoad, type PacedLoad } from './load.ts';

serveParent({ pacedLoad: (request) => pacedLoad(request.load as PacedLoad) }, async () => {});
process.send!({ type: 'ready' });
