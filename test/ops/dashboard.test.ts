// ops/dashboard.json is what an operator opens first: every query in it must read a metric the
// service exports, checked against a real scrape of /metrics.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { testApp } from '../support/app.ts';
import { exportedMetricNames, metricsInExpression } from '../support/promql.ts';

interface Panel {
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

const dashboard = JSON.parse(readFileSync(new URL('../../ops/dashboard.json', import.meta.url), 'utf8')) as {
  panels: Panel[];
  uid: string;
};
const queries = dashboard.panels.flatMap(function expressions(panel): { panel: string; expr: string }[] {
  return [
    ...(panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })),
    ...(panel.panels ?? []).flatMap(expressions),
  ];
});

t.test('every dashboard query names only metrics that /metrics exports', async (t) => {
  const { app } = await testApp(t);
  const scrape = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(scrape.statusCode, 200);
  const exported = exportedMetricNames(scrape.body);
  t.ok(exported.has('rx_sends_total'), 'the scrape was read');
  t.ok(queries.length >= 10, `the dashboard has queries (${queries.length})`);
  const unknown = queries.flatMap(({ panel, expr }) =>
    metricsInExpression(expr)
      .filter((name) => !exported.has(name))
      .map((name) => `${panel}: ${name}`),
  );
  t.same(unknown, [], 'metrics the service does not export');
});

t.test('the check finds a metric that does not exist', async (t) => {
  const names = metricsInExpression(
    'histogram_quantile(0.95, sum by (le, route) (rate(rx_no_such_metric_bucket{route="/x"}[5m]))) / on (job) group_left up',
  );
  t.same(names.sort(), ['rx_no_such_metric_bucket', 'up']);
});

t.test('every metric the README names is on the dashboard or in the alerts', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const alerts = readFileSync(new URL('../../ops/alerts.yml', import.meta.url), 'utf8');
  const used = new Set(queries.flatMap(({ expr }) => metricsInExpression(expr)).map((name) => name.replace(/_bucket$/, '')));
  const named = [...new Set(readme.match(/\brx_[a-z_]+\b/g) ?? [])].filter((name) => !name.endsWith('_'));
  t.same(
    named.filter((name) => !used.has(name) && !alerts.includes(name)),
    [],
    'README metrics missing from ops/',
  );
});
