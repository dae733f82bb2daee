// openapi.yaml is the contract operators and producers read: it must list exactly the app's routes.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { parse } from 'yaml';
import { testApp } from './helpers/app.ts';

t.test('openapi.yaml documents every route and only those', async (t) => {
  const { app } = await testApp(t);
  const document = parse(readFileSync(new URL('../openapi.yaml', import.meta.url), 'utf8')) as {
    paths: Record<string, Record<string, unknown>>;
  };
  const fromDocument = new Set<string>();
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const method of Object.keys(operations)) {
      if (['get', 'post', 'put', 'patch', 'delete'].includes(method)) fromDocument.add(`${method.toUpperCase()} ${path}`);
    }
  }
  const fromApp = new Set(app.registeredRoutes.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`));
  t.same([...fromApp].filter((r) => !fromDocument.has(r)).sort(), [], 'routes missing from openapi.yaml');
  t.same([...fromDocument].filter((r) => !fromApp.has(r)).sort(), [], 'documented routes the app does not serve');
});
