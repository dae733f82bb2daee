// Liveness says the process runs; readiness says it can do its work (Postgres answers, schema current).
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { listMigrations, migrationsApplied } from '../db/migrate.ts';

const Health = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) });

export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const expectedMigrations = (await listMigrations()).length;

  app.get(
    '/health/live',
    {
      schema: { operationId: 'getLiveness', summary: 'Liveness: the process runs (the container HEALTHCHECK)', response: { 200: Health } },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/health/ready',
    {
      schema: {
        operationId: 'getReadiness',
        summary: 'Readiness: Postgres answers and every migration is applied (the load balancer)',
        response: { 200: Health, 503: Health },
      },
    },
    async (_request, reply) => {
      let database = 'ok';
      let schema = 'ok';
      try {
        await app.sql`select 1`;
        if (!(await migrationsApplied(app.sql, expectedMigrations))) schema = 'migrations pending';
      } catch {
        database = 'unreachable';
        schema = 'unknown';
      }
      // A consumer that lost its brokers reads nothing until it reconnects (it retries on its own).
      const eventBus = app.eventBus?.status();
      const ready = database === 'ok' && schema === 'ok' && eventBus !== 'broker unreachable';
      const checks = { database, schema, ...(eventBus !== undefined && { eventBus }) };
      return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
    },
  );
};
