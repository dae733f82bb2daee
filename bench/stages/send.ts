// Sending: queued tracking emails → VA Notify, driven through the service's trigger (POST
// /v1/jobs/send, one claimed batch per call) until every email is sent, with the rate budget off.
// Limit beside it: the sandbox VA Notify alone, driven by the service's own VA Notify client from
// another process at the same concurrency (SEND_CONCURRENCY), with the same latency.
import { randomUUID } from 'node:crypto';
import type { StageOptions } from '../run.ts';
import type { Sql } from '../../src/db/connect.ts';
import { testConfig } from '../../src/config.ts';
import { SandboxDefaults } from '../../src/sandbox/va-notify.ts';
import { vaNotifyClientFromConfig } from '../../src/sending/va-notify-client.ts';
import { benchDatabase } from '../lib/database.ts';
import { insertEmails, veteranIcn } from '../lib/fixtures.ts';
import { concurrently, untilDone } from '../lib/load.ts';
import { serviceSettings, startSandboxes, startService, type Sandboxes, type Service } from '../lib/processes.ts';
import {
  count,
  machineNote,
  percent,
  progress,
  rate,
  seconds,
  verdict,
  type ResultRow,
  type ResultTable,
  peakRssRow,
} from '../lib/report.ts';

/** The service's send concurrency (its default), used for the sandbox-alone limit as well. */
export const sendConcurrency = testConfig().SEND_CONCURRENCY;

/** The sandbox VA Notify alone: `total` sends through the service's client, `concurrency` in flight. */
export async function sandboxAloneSends(
  sandbox: Sandboxes,
  total: number,
  concurrency: number,
  personalisation: Record<string, unknown>,
): Promise<number> {
  const client = vaNotifyClientFromConfig(testConfig(), sandbox.vaNotify, SandboxDefaults);
  let accepted = 0;
  const ms = await concurrently(total, concurrency, async (i) => {
    const outcome = await client.sendEmail({ icn: veteranIcn(900_000 + i), reference: randomUUID(), personalisation });
    if (outcome.kind === 'accepted') accepted += 1;
  });
  if (accepted !== total) throw new Error(`the sandbox accepted ${accepted} of ${total} sends`);
  return ms;
}

/** Triggers send runs until `expected` emails are sent; returns the elapsed milliseconds. */
export async function sendAll(service: Service, sql: Sql, expected: number): Promise<{ ms: number; runs: number }> {
  let sent = 0;
  let runs = 0;
  const ms = await untilDone(async () => {
    const result = await service.trigger<{ sent: number; retried: number; failed: number }>('send');
    runs += 1;
    if (result.retried > 0 || result.failed > 0) throw new Error(`send run: ${JSON.stringify(result)}`);
    sent += result.sent;
    return result.sent > 0 && sent < expected;
  });
  const [row] = await sql<{ sent: number }[]>`select count(*)::int as sent from tracking_email where state = 'sent'`;
  if (sent !== expected) throw new Error(`sent ${sent} of ${expected} emails (${row!.sent} in the table)`);
  return { ms, runs };
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const phases = options.small
    ? [
        { latencyMs: 0, emails: 200 },
        { latencyMs: 50, emails: 100 },
      ]
    : [
        { latencyMs: 0, emails: 10_000 },
        { latencyMs: 50, emails: 4_000 },
      ];
  const db = await benchDatabase();
  // No callbacks here (the callbacks stage measures them), and a limit VA Notify never reaches.
  const sandbox = await startSandboxes({ rateLimitPerMinute: 1_000_000_000, callbackUrl: null });
  let service: Service | undefined;
  try {
    const { sql } = db;
    service = await startService(serviceSettings(db.url), { vaNotify: sandbox.vaNotify, aal: sandbox.aal });
    const rows: ResultRow[] = [];
    let first = 0;
    const notes: string[] = [];
    for (const phase of phases) {
      await sandbox.setLatency(phase.latencyMs);
      await insertEmails(sql, { first, count: phase.emails, state: 'queued' });
      first += phase.emails;
      await sql`vacuum analyze tracking_email`;
      const [sample] = await sql<{ personalisation: Record<string, unknown> }[]>`select personalisation from tracking_email limit 1`;

      progress(`limit: the sandbox alone, ${count(phase.emails)} sends, ${sendConcurrency} in flight, ${phase.latencyMs} ms latency`);
      const aloneMs = await sandboxAloneSends(sandbox, phase.emails, sendConcurrency, sample!.personalisation);
      progress(`service: sending ${count(phase.emails)} queued emails, ${phase.latencyMs} ms latency`);
      const { ms, runs } = await sendAll(service, sql, phase.emails);
      await sql`update tracking_email set state = 'delivered' where state = 'sent'`;

      const serviceRate = phase.emails / (ms / 1000);
      const aloneRate = phase.emails / (aloneMs / 1000);
      const ratio = serviceRate / aloneRate;
      rows.push({
        measure: `emails sent, sandbox answering after ${phase.latencyMs} ms`,
        result: `${rate(serviceRate, 'emails')} (${seconds(ms)})`,
        limit: `sandbox alone, ${sendConcurrency} in flight: ${rate(aloneRate, 'requests')}`,
        ratio: percent(ratio),
        target: phase.latencyMs === 50 ? verdict('≥ 80%', ratio >= 0.8) : '',
      });
      notes.push(
        `${phase.latencyMs} ms: ${count(phase.emails)} emails in ${runs} send runs (SEND_BATCH_SIZE 100, SEND_CONCURRENCY ${sendConcurrency})`,
      );
    }
    const counts = await sandbox.counts();
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;
    rows.push(peakRssRow(peakRssBytes));
    return {
      title: 'Sending: queued tracking emails to the sandbox VA Notify, rate budget off',
      rows,
      notes: [
        ...notes,
        `sandbox counters: ${count(counts.sendsAccepted)} sends accepted, rejected ${JSON.stringify(counts.sendsRejected)}; service error log lines: ${errorLines}`,
        "the service, the sandbox and the driver run in three processes; peak RSS is the service process's high-water mark (VmHWM)",
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await sandbox.stop();
    await db.close();
  }
}
