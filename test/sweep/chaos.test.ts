// The chaos run in reduced size: three real service processes on one database, a misbehaving
// sandbox VA Notify and AAL, one instance killed with SIGKILL and restarted. Every promise holds.
import t from 'tap';
import { runChaos } from '../../bench/chaos.ts';
import { testDatabase } from '../helpers/database.ts';

t.test('three instances, lost and duplicated callbacks, failing sends and AAL posts, one SIGKILL', async (t) => {
  const { url } = await testDatabase(t);
  const report = await runChaos({ veterans: 45, databaseUrl: url, deadlineMs: 150_000 });
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
