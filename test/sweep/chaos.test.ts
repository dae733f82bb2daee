// The chaos run in reduced size: three real service processes on one database, a misbehaving
// sandbox VA Notify and AAL, one instance killed with SIGKILL and restarted. Every promise holds.
// It runs the chaos tool as its own process (`node bench/chaos.ts 45`), which prints its report as
// JSON and makes its own scratch database on the server DATABASE_URL names.
import t from 'tap';
import { runScript } from '../support/cli.ts';

/** The parts of the tool's report that the test reads. */
interface ChaosReport {
  violations: string[];
  dispenses: number;
  emails: Record<string, number>;
  vaNotify: { sendsAccepted: number; getsById: number; getsByReference: number; callbacksDropped: number };
}

async function runChaos(veterans: number): Promise<ChaosReport> {
  const run = await runScript('bench/chaos.ts', [String(veterans)], process.env);
  try {
    return JSON.parse(run.stdout) as ChaosReport;
  } catch {
    throw new Error(`chaos run exited ${run.code} without a report: ${run.stderr.slice(-2000)}`);
  }
}

t.test('three instances, lost and duplicated callbacks, failing sends and AAL posts, one SIGKILL', async (t) => {
  const report = await runChaos(45);
  t.comment(JSON.stringify(report));
  t.same(report.violations, [], 'every promise held');
  t.equal(report.dispenses, 90);
  t.same(Object.keys(report.emails).sort(), ['delivered', 'failed', 'permanent_failure'].sort());
  t.equal(report.emails.permanent_failure, 5, 'one in ten declined email');
  t.equal(report.emails.failed, 5, 'one in ten temporary failures, failed after the last replay');
  t.ok(report.vaNotify.getsByReference > 0, 'the kill left orphaned sends, looked up by reference before any resend');
  t.ok(report.vaNotify.callbacksDropped > 0, 'callbacks were lost');
  t.ok(report.vaNotify.getsById > 0, 'the sweep polled for them');
  t.ok(report.vaNotify.sendsAccepted >= 45, 'every veteran was sent an email at least once');
});
