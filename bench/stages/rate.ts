// Rate: a burst of queued emails sent under the shared rate budget (600 a minute) to a sandbox VA
// Notify that allows 620 a minute. The budget must hold the sends under VA Notify's limit (no 429)
// while using it (a 300-email burst takes about 30 s).
import type { StageOptions } from '../run.ts';
import { benchDatabase } from '../lib/database.ts';
import { insertEmails } from '../lib/fixtures.ts';
import { serviceSettings, startSandboxes, startService, type Service } from '../lib/processes.ts';
import { count, machineNote, percent, progress, seconds, verdict, type ResultTable, peakRssRow } from '../lib/report.ts';
import { sendAll } from './send.ts';

export async function run(options: StageOptions): Promise<ResultTable> {
  const burst = options.small ? 20 : 300;
  const budgetPerMinute = 600;
  const vaNotifyLimitPerMinute = 620;
  const db = await benchDatabase();
  const sandbox = await startSandboxes({ rateLimitPerMinute: vaNotifyLimitPerMinute, callbackUrl: null });
  let service: Service | undefined;
  try {
    const { sql } = db;
    await insertEmails(sql, { first: 0, count: burst, state: 'queued' });
    service = await startService(serviceSettings(db.url, { VA_NOTIFY_RATE_LIMIT_PER_MINUTE: String(budgetPerMinute) }), {
      vaNotify: sandbox.vaNotify,
      aal: sandbox.aal,
    });
    progress(`service: sending a burst of ${burst} emails under a budget of ${budgetPerMinute}/min`);
    const { ms, runs } = await sendAll(service, sql, burst);
    const counts = await sandbox.counts();
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;

    const tooMany = counts.sendsRejected[429] ?? 0;
    const perMinute = burst / (ms / 60_000);
    // The bucket holds one second's worth when the burst starts, then refills at the budget's pace:
    // the budget is kept when the rest of the burst takes at least (burst - bucket) / rate.
    const bucket = budgetPerMinute / 60;
    const expectedMs = ((burst - bucket) / (budgetPerMinute / 60)) * 1000;
    const afterBucketPerMinute = (burst - bucket) / (ms / 60_000);
    return {
      title: `Rate: a ${burst}-email burst under a ${budgetPerMinute}/min budget, sandbox VA Notify limited to ${vaNotifyLimitPerMinute}/min`,
      rows: [
        {
          measure: "achieved send rate (after the first second's bucket)",
          result: `${count(perMinute)} emails/min (${count(afterBucketPerMinute)}/min)`,
          limit: `configured budget ${budgetPerMinute}/min`,
          ratio: percent(afterBucketPerMinute / budgetPerMinute),
          target: verdict('≤ 100%', afterBucketPerMinute <= budgetPerMinute * 1.02),
        },
        {
          measure: '429 answers from VA Notify',
          result: count(tooMany),
          limit: `sandbox limit ${vaNotifyLimitPerMinute}/min`,
          target: verdict('0', tooMany === 0),
        },
        {
          measure: 'elapsed',
          result: seconds(ms),
          limit: `budget pace: ${seconds(expectedMs)}`,
          ratio: percent(ms / expectedMs),
          target: options.small ? '' : verdict('about 30 s', ms > 25_000 && ms < 35_000),
        },
        peakRssRow(peakRssBytes),
      ],
      notes: [
        `${count(counts.sendsAccepted)} sends accepted in ${runs} send runs; sandbox answers other than 201: ${JSON.stringify(counts.sendsRejected)}; service error log lines: ${errorLines}`,
        "budget pace: the bucket starts full (one second's worth), then refills at 10 a second",
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await sandbox.stop();
    await db.close();
  }
}
