// The OpenAPI description is generated from the route schemas, so it cannot drift from what the
// routes validate and answer. The answers every route can give whatever its handler does (a rate
// limit, an unreadable body, an unexpected error) are added to the route schemas here, once, so
// that each route declares only its own.
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { RequestIdHeader } from './request-tracing.ts';
import { ErrorBody } from './schemas.ts';

export const SecuritySchemes = {
  internalToken: {
    type: 'http',
    scheme: 'bearer',
    description: 'one of INTERNAL_API_TOKENS: ingest, job triggers, operator views and actions',
  },
  callbackToken: {
    type: 'http',
    scheme: 'bearer',
    description: 'one of VA_NOTIFY_CALLBACK_TOKENS, presented by VA Notify on service-level callbacks',
  },
  vaNotifySignature: {
    type: 'apiKey',
    in: 'header',
    name: 'x-enp-signature',
    description:
      'HMAC-SHA256 of the raw body with the secret of the VA Notify API key that sent the notification (per-notification callback_url)',
  },
} as const;

type RouteSchema = NonNullable<RouteOptions['schema']> & {
  response?: Record<string, unknown>;
  security?: Record<string, string[]>[];
  hide?: boolean;
};

const documented = (route: RouteOptions) => !(route.schema as RouteSchema | undefined)?.hide;

/** Adds the given error answers to a route's schema, keeping any the route declares itself. */
function addErrorAnswers(route: RouteOptions, codes: number[]): void {
  route.schema ??= {};
  const schema = route.schema as RouteSchema;
  schema.response ??= {};
  const response = schema.response;
  for (const code of codes) response[code] ??= ErrorBody;
}

/**
 * Registers the description (`/documentation/json`, `/documentation/yaml`) and its reference UI
 * (`/documentation`), and completes the schemas of every route registered after it.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  app.addHook('onRoute', (route) => {
    if (!documented(route)) return;
    route.schema ??= {};
    const schema = route.schema as RouteSchema;
    // A route outside the internal scope and without a scheme of its own is open (health, metrics).
    schema.security ??= [];
    // Every route is rate limited and any handler can fail unexpectedly.
    const codes = [429, 500];
    // A body is read on every POST: unreadable (400), too large (413) or of an unknown type (415).
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (methods.includes('POST')) codes.push(400, 413, 415);
    addErrorAnswers(route, codes);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Rx tracking email service',
        version: '0.1.0',
        description:
          'Turns CMOP medication-dispense events into one Rx tracking email per veteran, sends it through VA Notify, ' +
          'follows it to a final delivery status, and posts an MHV Account Activity Log event for every delivered email. ' +
          'Every answer carries an `x-request-id` header: the one the request sent, or a new one.',
      },
      servers: [{ url: 'http://127.0.0.1:3000', description: 'npm start' }],
      components: { securitySchemes: structuredClone(SecuritySchemes) as never },
    },
    transformObject: (document) => withRequestIds((document as { openapiObject: OpenApiObject }).openapiObject) as never,
    // Shared schemas keep their $id as their component name.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/documentation' });
}

interface OpenApiObject {
  components?: Record<string, Record<string, unknown>>;
  paths?: Record<string, Record<string, { parameters?: unknown[]; responses?: Record<string, { headers?: Record<string, unknown> }> }>>;
}

/** Every operation takes an x-request-id and every answer carries one (src/http/request-tracing.ts). */
function withRequestIds(document: OpenApiObject): OpenApiObject {
  document.components ??= {};
  const components = document.components;
  components.parameters ??= {};
  components.parameters.RequestId = {
    name: RequestIdHeader,
    in: 'header',
    required: false,
    description: 'an id to trace the request by (up to 128 letters, digits and ._:@+=/-); a new uuid when absent or unusable',
    schema: { type: 'string', maxLength: 128 },
  };
  components.headers ??= {};
  components.headers.RequestId = {
    description: "the request's id: the x-request-id it sent, or a new uuid; every log line of the request carries it",
    schema: { type: 'string' },
  };
  for (const operations of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(operations)) {
      operation.parameters ??= [];
      operation.parameters.push({ $ref: '#/components/parameters/RequestId' });
      for (const response of Object.values(operation.responses ?? {})) {
        response.headers = { ...response.headers, [RequestIdHeader]: { $ref: '#/components/headers/RequestId' } };
      }
    }
  }
  return document;
}

/**
 * The internal scope's routes: the internal token, its 401, and a 503 when the database they all read
 * is unreachable.
 */
export function documentInternalRoutes(scope: FastifyInstance): void {
  scope.addHook('onRoute', (route) => {
    if (!documented(route)) return;
    (route.schema as RouteSchema).security = [{ internalToken: [] }];
    addErrorAnswers(route, [401, 503]);
  });
}
