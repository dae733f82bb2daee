// openapi.yaml is the contract operators and producers read. It is generated from the route schemas
// (npm run openapi), linted with Redocly's recommended rules plus required operation ids, served at
// /documentation, and every answer the routes give to bad requests is one it documents.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { openApiDocument } from '../src/http/openapi-document.ts';
import { internalAuth, testApp } from './support/app.ts';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const committed = readFileSync(new URL('../openapi.yaml', import.meta.url), 'utf8');

interface Operation {
  operationId?: string;
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string; required?: boolean; description?: string; schema: Record<string, unknown> }[];
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}
interface Document {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas?: Record<string, unknown>; securitySchemes: Record<string, unknown> };
}
const document = parse(committed) as Document;

/** Runs `redocly lint` on a document; resolves with its problems and exit code, never throws. */
async function lint(path: string): Promise<{ code: number; errors: string[]; warnings: string[] }> {
  const result = await run(
    join(root, 'node_modules/.bin/redocly'),
    ['lint', path, '--format=json', `--config=${join(root, 'redocly.yaml')}`],
    {
      cwd: root,
      // No network here: no usage report, no update check.
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
    },
  ).then(
    ({ stdout }) => ({ code: 0, stdout }),
    (error: { code: number; stdout: string }) => ({ code: error.code, stdout: error.stdout }),
  );
  const report = JSON.parse(result.stdout) as { problems: { severity: string; ruleId: string; message: string }[] };
  const describe = (p: { ruleId: string; message: string }) => `${p.ruleId}: ${p.message}`;
  return {
    code: result.code,
    errors: report.problems.filter((p) => p.severity === 'error').map(describe),
    warnings: report.problems.filter((p) => p.severity === 'warn').map(describe),
  };
}

t.test('openapi.yaml is the one the route schemas generate (npm run openapi writes it)', async (t) => {
  t.equal(committed, await openApiDocument(), 'openapi.yaml differs from the routes: run npm run openapi');
});

t.test("openapi.yaml passes Redocly's recommended rules with no error or warning", async (t) => {
  const result = await lint(join(root, 'openapi.yaml'));
  t.same(result.errors, [], 'errors');
  t.same(result.warnings, [], 'warnings');
  t.equal(result.code, 0);
});

t.test('the lint fails on an invalid document', async (t) => {
  const broken = structuredClone(document);
  const operation = broken.paths['/v1/stats']!.get!;
  delete operation.operationId;
  (operation.responses['200'] as Record<string, unknown>).content = { 'application/json': { schema: { type: 'int' } } };
  const path = join(mkdtempSync(join(tmpdir(), 'openapi-')), 'openapi.yaml');
  writeFileSync(path, stringify(broken));
  const result = await lint(path);
  t.not(result.code, 0, 'redocly exits non-zero');
  t.match(result.errors.join('\n'), /operation-operationId/);
  t.match(result.errors.join('\n'), /struct/);
});

t.test('every operation has an id, a summary and its security', async (t) => {
  const schemes = Object.keys(document.components.securitySchemes).sort();
  t.same(schemes, ['callbackToken', 'internalToken', 'vaNotifySignature']);
  const ids = new Set<string>();
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const name = `${method.toUpperCase()} ${path}`;
      t.ok(operation.operationId, `${name} has an operationId`);
      t.notOk(ids.has(operation.operationId!), `${name}'s operationId is unique`);
      ids.add(operation.operationId!);
      t.ok(operation.summary, `${name} has a summary`);
      const expected = path.startsWith('/v1/va-notify/')
        ? [{ callbackToken: [] }, { vaNotifySignature: [] }]
        : path.startsWith('/v1/')
          ? [{ internalToken: [] }]
          : [];
      t.same(operation.security, expected, `${name}'s security`);
      t.ok(
        operation.parameters?.some((p) => (p as { $ref?: string }).$ref === '#/components/parameters/RequestId'),
        `${name} takes an x-request-id`,
      );
      for (const [code, response] of Object.entries(operation.responses)) {
        t.ok((response as { headers?: Record<string, unknown> }).headers?.['x-request-id'], `${name} ${code} carries x-request-id`);
      }
    }
  }
});

/**
 * A schema as JSON says it: TypeBox's symbols dropped, $refs to components resolved, and the two
 * spellings @fastify/swagger rewrites in their OpenAPI form (`const: x` as `enum: [x]`, a record's
 * `patternProperties: {"^(.*)$": s}` as `additionalProperties: s`) written that one way.
 */
function plain(schema: unknown): unknown {
  const resolve = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(resolve);
    if (typeof value !== 'object' || value === null) return value;
    const object = value as Record<string, unknown>;
    if (typeof object.$ref === 'string') {
      const name = object.$ref.replace('#/components/schemas/', '');
      return resolve(document.components.schemas?.[name] ?? name);
    }
    const entries = Object.entries(object)
      .filter(([key]) => key !== '$id')
      .map(([key, item]): [string, unknown] => {
        if (key === 'const') return ['enum', [item]];
        const patterns = item as Record<string, unknown>;
        if (key === 'patternProperties' && Object.keys(patterns).length === 1 && '^(.*)$' in patterns)
          return ['additionalProperties', patterns['^(.*)$']];
        return [key, item];
      });
    return Object.fromEntries(entries.map(([key, item]) => [key, resolve(item)]));
  };
  return resolve(JSON.parse(JSON.stringify(schema)));
}

t.test("the document lists exactly the app's routes, with their request and response schemas", async (t) => {
  const { app } = await testApp(t);
  const errorBody = plain(app.getSchema('ErrorBody'));
  const inRoute = (schema: unknown) =>
    plain(schema === 'ErrorBody' || (schema as { $ref?: string })?.$ref === 'ErrorBody' ? errorBody : schema);
  const fromApp = new Set<string>();
  for (const route of app.registeredRoutes) {
    const path = route.url.replace(/:(\w+)/g, '{$1}');
    const name = `${route.method} ${path}`;
    fromApp.add(name);
    const operation = document.paths[path]?.[route.method.toLowerCase()];
    if (!operation) {
      t.fail(`${name} is not in openapi.yaml`);
      continue;
    }
    const schema = route.schema as {
      body?: unknown;
      querystring?: { properties: Record<string, unknown>; required?: string[] };
      params?: { properties: Record<string, unknown> };
      response: Record<string, unknown>;
    };
    // Responses: the same status codes, each with the route's schema for each media type.
    t.same(Object.keys(operation.responses).sort(), Object.keys(schema.response).map(String).sort(), `${name}: status codes`);
    for (const [code, response] of Object.entries(schema.response)) {
      const documented = operation.responses[code]?.content ?? {};
      const byType = (response as { content?: Record<string, { schema: unknown }> }).content;
      if (byType) {
        t.same(Object.keys(documented).sort(), Object.keys(byType).sort(), `${name} ${code}: media types`);
        for (const [type, { schema: s }] of Object.entries(byType))
          t.same(plain(documented[type]?.schema), inRoute(s), `${name} ${code} ${type}`);
      } else {
        t.same(plain(documented['application/json']?.schema), inRoute(response), `${name} ${code}`);
      }
    }
    // Request: the body under every media type the route reads, and each query and path parameter.
    if (schema.body === undefined) t.notOk(operation.requestBody, `${name}: no request body`);
    else
      for (const [type, content] of Object.entries(operation.requestBody?.content ?? { none: { schema: undefined } })) {
        t.same(plain(content.schema), plain(schema.body), `${name}: request body as ${type}`);
      }
    for (const [where, part] of [
      ['query', schema.querystring],
      ['path', schema.params],
    ] as const) {
      const documented = (operation.parameters ?? []).filter((p) => p.in === where);
      t.same(documented.map((p) => p.name).sort(), Object.keys(part?.properties ?? {}).sort(), `${name}: ${where} parameters`);
      for (const parameter of documented) {
        // A parameter's description sits beside its schema in OpenAPI, inside it in the route's.
        const described =
          parameter.description === undefined ? parameter.schema : { ...parameter.schema, description: parameter.description };
        t.same(plain(described), plain(part!.properties[parameter.name]), `${name}: ${where} ${parameter.name}`);
        t.equal(
          parameter.required === true,
          where === 'path' || (part as { required?: string[] }).required?.includes(parameter.name) === true,
          `${name}: ${where} ${parameter.name} required`,
        );
      }
    }
  }
  const fromDocument = Object.entries(document.paths).flatMap(([path, operations]) =>
    Object.keys(operations).map((m) => `${m.toUpperCase()} ${path}`),
  );
  t.same(fromDocument.filter((r) => !fromApp.has(r)).sort(), [], 'documented routes the app does not serve');
});

t.test('every answer to a bad request is one the document lists for that operation', async (t) => {
  const { app } = await testApp(t, { RATE_LIMIT_PER_MINUTE: '100000' });
  const sample = (path: string) => path.replace('{id}', '7c9e6679-7425-40de-944b-e07fc1f63fbe');
  const unlisted: string[] = [];
  const answered = new Set<string>();
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const url = sample(path);
      const requests: { headers?: Record<string, string>; payload?: string; query?: Record<string, string> }[] = [
        {},
        { headers: internalAuth },
        { headers: { ...internalAuth, 'content-type': 'application/json' }, payload: '{"not json' },
        { headers: { ...internalAuth, 'content-type': 'application/xml' }, payload: '<a/>' },
        { headers: { ...internalAuth, 'content-type': 'application/json' }, payload: '{}' },
        { headers: { ...internalAuth, 'content-type': 'application/json' }, payload: JSON.stringify({ x: 'x'.repeat(6 * 1024 * 1024) }) },
        { headers: internalAuth, query: { limit: '-1', state: 'nope', cursor: 'nope' } },
      ];
      for (const request of requests) {
        const response = await app.inject({ method: method.toUpperCase() as 'GET', url, ...request });
        answered.add(String(response.statusCode));
        if (!(String(response.statusCode) in operation.responses))
          unlisted.push(`${method.toUpperCase()} ${path}: ${response.statusCode} ${response.body.slice(0, 120)}`);
      }
    }
  }
  t.same(unlisted, [], 'answers the document does not list');
  t.ok(
    ['200', '400', '401', '413', '415'].every((code) => answered.has(code)),
    `the probes reached the routes (${[...answered].sort().join(', ')})`,
  );
});

t.test('the document and its reference UI are served at /documentation', async (t) => {
  const { app } = await testApp(t);
  const ui = await app.inject({ method: 'GET', url: '/documentation/' });
  t.equal(ui.statusCode, 200);
  t.match(ui.headers['content-type'], /text\/html/);
  t.match(ui.body, /swagger-ui/i);
  const json = await app.inject({ method: 'GET', url: '/documentation/json' });
  t.equal(json.statusCode, 200);
  t.same(json.json(), document, 'the served document is openapi.yaml');
});
