// Every outcome the metrics' help text and the docs name for rx_callbacks_total is emitted when its
// case happens: the runbook's checks (key rotation, callback registration) watch `unauthorized`.
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { testApp } from '../support/app.ts';
import { insertNotification } from '../support/fixtures.ts';
import { callbackBody, insertEmail } from '../support/status.ts';

const token = 'va-notify-callback-token-0001';
const root = new URL('../../', import.meta.url);
const docs = [
  'README.md',
  ...readdirSync(new URL('docs/', root))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
]
  .map((file) => readFileSync(new URL(file, root), 'utf8'))
  .join('\n');

/** The label values a metric's help text lists in its first parenthesis, e.g. "by outcome (a, b)". */
function helpValues(metrics: string, name: string): string[] {
  const help = new RegExp(`^# HELP ${name} .*?\\(([^)]*)\\)`, 'm').exec(metrics);
  return help ? help[1]!.split(',').map((value) => value.trim()) : [];
}

/** The outcome values the docs name for a metric: `name{outcome="x"}` and the `{outcome="y"}` after it. */
function documentedValues(name: string): string[] {
  const values = new Set<string>();
  for (const match of docs.matchAll(new RegExp(`${name}\\{outcome="([a-z_]+)"\\}([^\\n]*)`, 'g'))) {
    values.add(match[1]!);
    for (const more of match[2]!.matchAll(/`\{outcome="([a-z_]+)"\}`/g)) values.add(more[1]!);
  }
  return [...values];
}

function counter(metrics: string, name: string, outcome: string): number {
  let total = 0;
  for (const match of metrics.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\d+)`, 'gm'))) {
    if (match[1]!.includes(`outcome="${outcome}"`)) total += Number(match[2]);
  }
  return total;
}

t.test('rx_callbacks_total: every named outcome happens when its case does', async (t) => {
  const { app, db } = await testApp(t, { VA_NOTIFY_CALLBACK_TOKENS: token });
  const post = (body: unknown, authorization = `Bearer ${token}`) =>
    app.inject({
      method: 'POST',
      url: '/v1/va-notify/callbacks',
      headers: { 'content-type': 'application/json', authorization },
      payload: JSON.stringify(body),
    });
  const id = await insertNotification(db.sql, await insertEmail(db.sql));
  const cases: Record<string, () => Promise<unknown>> = {
    applied: () => post(callbackBody(id)),
    duplicate: () => post(callbackBody(id)),
    stale: () => post(callbackBody(id, { status: 'sending', completed_at: '2026-05-14T13:22:09.500000Z' })),
    pending_notification: () => post(callbackBody(randomUUID())),
    unrecognised: () => post(callbackBody(id, { status: 'teleported', completed_at: '2026-05-14T13:23:00.000000Z' })),
    unauthorized: () => post(callbackBody(id), 'Bearer not-the-registered-token'),
    invalid: () => post({ status: 'delivered' }),
  };
  for (const run of Object.values(cases)) await run();
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;

  const named = new Set([...helpValues(metrics, 'rx_callbacks_total'), ...documentedValues('rx_callbacks_total')]);
  t.ok(named.has('unauthorized') && named.has('invalid'), 'the help text and the docs name the refused outcomes');
  t.same(
    [...named].filter((outcome) => !(outcome in cases)),
    [],
    'every named outcome has a case here',
  );
  for (const outcome of named) t.ok(counter(metrics, 'rx_callbacks_total', outcome) > 0, `${outcome} emitted`);
});

t.test('the outcomes the docs name for any counter are among those its help text lists', async (t) => {
  const { app } = await testApp(t);
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  for (const name of ['rx_callbacks_total', 'rx_sends_total', 'rx_aal_posts_total', 'rx_dispenses_ingested_total']) {
    const listed = helpValues(metrics, name);
    t.ok(listed.length > 0, `${name} lists its outcomes`);
    t.same(
      documentedValues(name).filter((outcome) => !listed.includes(outcome)),
      [],
      `${name}: documented outcomes it never emits`,
    );
  }
});
