// ops/alerts.yml: the rules parse (promtool check rules), each alert fires on its synthetic series and
// only then (promtool test rules ops/alerts.test.yml), and each reads only metrics /metrics exports.
// promtool comes with Debian's prometheus package; .ci/run installs it and sets REQUIRE_PROMTOOL=1.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { parse } from 'yaml';
import { testApp } from '../support/app.ts';
import { exportedMetricNames, metricsInExpression } from '../support/promql.ts';

const run = promisify(execFile);
const ops = new URL('../../ops/', import.meta.url).pathname;
const rules = parse(readFileSync(join(ops, 'alerts.yml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
const alerts = rules.groups.flatMap((group) => group.rules);

function hasPromtool(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Runs promtool; resolves with its exit code and output, never throws. */
async function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  return run('promtool', args).then(
    ({ stdout, stderr }) => ({ code: 0, output: stdout + stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, output: error.stdout + error.stderr }),
  );
}

/** A copy of ops/ in a temporary folder with alerts.yml changed by `edit`. */
function opsWith(edit: (text: string) => string): string {
  const folder = mkdtempSync(join(tmpdir(), 'alerts-'));
  cpSync(ops, folder, { recursive: true });
  writeFileSync(join(folder, 'alerts.yml'), edit(readFileSync(join(ops, 'alerts.yml'), 'utf8')));
  return folder;
}

t.test('every alert reads only metrics that /metrics exports', async (t) => {
  const { app } = await testApp(t);
  const exported = exportedMetricNames((await app.inject({ method: 'GET', url: '/metrics' })).body);
  const unknown = alerts.flatMap((rule) =>
    metricsInExpression(rule.expr)
      .filter((name) => !exported.has(name))
      .map((name) => `${rule.alert}: ${name}`),
  );
  t.same(unknown, [], 'metrics the service does not export');
});

t.test('every alert has a synthetic series on which it fires', async (t) => {
  const cases = parse(readFileSync(join(ops, 'alerts.test.yml'), 'utf8')) as {
    tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
  };
  const fired = new Set(cases.tests.flatMap((c) => c.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
  t.same(
    alerts.map((rule) => rule.alert).filter((name) => !fired.has(name)),
    [],
    'alerts never expected to fire',
  );
});

const promtoolMissing = hasPromtool() ? false : 'promtool is not installed (apt-get install prometheus); .ci/run installs it';
if (promtoolMissing && process.env.REQUIRE_PROMTOOL === '1') {
  t.fail('promtool is required (REQUIRE_PROMTOOL=1) but not installed');
}

t.test('promtool', { skip: promtoolMissing }, async (t) => {
  t.test('the rules parse and every alert fires on its series', async (t) => {
    const check = await promtool('check', 'rules', join(ops, 'alerts.yml'));
    t.equal(check.code, 0, check.output);
    const tested = await promtool('test', 'rules', join(ops, 'alerts.test.yml'));
    t.equal(tested.code, 0, tested.output);
  });

  t.test('a rule that does not parse, or does not fire, fails', async (t) => {
    const unparsable = opsWith((text) => text.replace('expr: max(rx_sending_paused) == 1', 'expr: max(rx_sending_paused == 1'));
    const check = await promtool('check', 'rules', join(unparsable, 'alerts.yml'));
    t.not(check.code, 0, 'check rules fails on a bad expression');
    t.match(check.output, /parse error|unclosed|unexpected/i);
    const silent = opsWith((text) => text.replace('> 87300', '> 1e9'));
    const tested = await promtool('test', 'rules', join(silent, 'alerts.test.yml'));
    t.not(tested.code, 0, 'test rules fails when an alert no longer fires');
    t.match(tested.output, /RxPendingDispenseBeyondMaxWait/);
  });
});
