// Builds the service from a config and a database handle. It never listens and never reads the
// environment: server.ts does that, and tests build the app with explicit config.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import sensible from '@fastify/sensible';
import rateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Config } from './config.ts';
import type { Sql } from './db/connect.ts';
import { installErrorHandler } from './http/errors.ts';
import { requireBearerToken } from './http/internal-auth.ts';
import { ErrorBody } from './http/schemas.ts';
import { createLogger } from './logger.ts';
import { healthRoutes } from './health/routes.ts';
import { ingestRoutes } from './ingest/routes.ts';

export interface AppOptions {
  config: Config;
  sql: Sql;
  /** A pino logger; defaults to one at config.LOG_LEVEL on stdout. */
  logger?: Logger;
}

export interface RegisteredRoute {
  method: string;
  url: string;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    sql: Sql;
    /** Every route the app serves, for the OpenAPI drift test. */
    registeredRoutes: RegisteredRoute[];
  }
}

export async function buildApp(options: AppOptions) {
  const { config, sql } = options;
  const app = Fastify({
    loggerInstance: (options.logger ?? createLogger(config.LOG_LEVEL)) as FastifyBaseLogger,
    trustProxy: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorate('config', config);
  app.decorate('sql', sql);
  const registeredRoutes: RegisteredRoute[] = [];
  app.decorate('registeredRoutes', registeredRoutes);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) if (method !== 'HEAD') registeredRoutes.push({ method, url: route.url });
  });

  app.addSchema(ErrorBody);
  installErrorHandler(app);
  await app.register(sensible);
  await app.register(rateLimit, { max: config.RATE_LIMIT_PER_MINUTE, timeWindow: '1 minute' });

  await app.register(healthRoutes);

  // Internal endpoints: ingest, job triggers, operator views. Each domain adds its routes here.
  await app.register(async (internal) => {
    internal.addHook('onRequest', requireBearerToken(config.INTERNAL_API_TOKENS));
    await internal.register(ingestRoutes);
  });

  // VA Notify's delivery-status callbacks authenticate with their own tokens or signature.
  return app as unknown as FastifyInstance;
}
