// What an on-call engineer needs to answer "did this veteran get their email?", and the metrics.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses } from '../http/schemas.ts';
import { stateCounts } from '../metrics.ts';
import { getTrackingEmail, listTrackingEmails, TrackingEmailStates } from './repository.ts';
import { EmailDetail, EmailSummary, Stats } from './schemas.ts';

export const operatorRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/tracking-emails',
    {
      schema: {
        querystring: Type.Object({
          state: Type.Optional(Type.Union(TrackingEmailStates.map((s) => Type.Literal(s)))),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          before: Type.Optional(Type.String({ format: 'date-time', description: 'page: emails created before this instant' })),
        }),
        response: { 200: Type.Object({ emails: Type.Array(EmailSummary) }), ...errorResponses(400, 401, 429) },
      },
    },
    async (request) => ({
      emails: await listTrackingEmails(app.sql, {
        state: request.query.state,
        limit: request.query.limit,
        before: request.query.before ? new Date(request.query.before) : undefined,
      }),
    }),
  );

  app.get(
    '/v1/tracking-emails/:id',
    {
      schema: {
        params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
        response: { 200: EmailDetail, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const email = await getTrackingEmail(app.sql, request.params.id);
      if (!email) throw app.httpErrors.notFound(`no tracking email ${request.params.id}`);
      return email;
    },
  );

  app.get('/v1/stats', { schema: { response: { 200: Stats, ...errorResponses(401, 429) } } }, async () => {
    const counts = await stateCounts(app.sql);
    return {
      dispenses: counts.medication_dispense,
      emails: counts.tracking_email,
      notifications: counts.notification,
      aalEvents: counts.aal_event,
    };
  });
};

/** GET /metrics: Prometheus text format. No PII in any label, so it is served without a token. */
export const metricsRoute: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/metrics', async (_request, reply) => {
    await app.metrics.collectFromDatabase();
    reply.type(app.metrics.registry.contentType);
    return app.metrics.registry.metrics();
  });
};
