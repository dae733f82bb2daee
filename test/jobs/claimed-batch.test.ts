// The claim–work–record loop the sender, the AAL worker and the sweep share.
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { workClaimedBatch } from '../../src/jobs/claimed-batch.ts';

t.test('works every item, never more at once than the concurrency', async (t) => {
  let running = 0;
  let most = 0;
  const worked: number[] = [];
  const end = await workClaimedBatch([1, 2, 3, 4, 5, 6, 7], {
    concurrency: 3,
    stopped: () => false,
    work: async (item) => {
      running++;
      most = Math.max(most, running);
      await sleep(5);
      worked.push(item);
      running--;
    },
  });
  t.same(worked.sort(), [1, 2, 3, 4, 5, 6, 7]);
  t.equal(most, 3);
  t.same(end, { unstarted: [], failure: undefined });
});

t.test('a stop leaves the items not started, in their order, to the caller', async (t) => {
  let stop = false;
  const worked: number[] = [];
  const end = await workClaimedBatch([1, 2, 3, 4, 5], {
    concurrency: 1,
    stopped: () => stop,
    work: async (item) => {
      worked.push(item);
      if (item === 2) stop = true;
    },
  });
  t.same(worked, [1, 2]);
  t.same(end.unstarted, [3, 4, 5]);
});

t.test('without onError, the first error stops every lane and comes back once they ended', async (t) => {
  const worked: number[] = [];
  let inFlightEnded = false;
  const end = await workClaimedBatch([1, 2, 3, 4, 5, 6], {
    concurrency: 2,
    stopped: () => false,
    work: async (item) => {
      worked.push(item);
      if (item === 1) throw new Error('not recorded');
      await sleep(20);
      inFlightEnded = true;
    },
  });
  t.equal((end.failure!.error as Error).message, 'not recorded');
  t.ok(inFlightEnded, 'the item in flight on the other lane finished first');
  t.same(worked, [1, 2]);
  t.same(end.unstarted, [3, 4, 5, 6]);
});

t.test('with onError, each error is told and the run goes on', async (t) => {
  const told: number[] = [];
  const end = await workClaimedBatch([1, 2, 3], {
    concurrency: 2,
    stopped: () => false,
    work: async (item) => {
      if (item !== 2) throw new Error(`item ${item}`);
    },
    onError: (item) => told.push(item),
  });
  t.same(told.sort(), [1, 3]);
  t.same(end, { unstarted: [], failure: undefined });
});
