// What an on-call engineer needs to answer "did this veteran get their email?", and the metrics.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses, isUuid, UuidPattern } from '../http/schemas.ts';
import { stateCounts } from '../metrics.ts';
import { IcnPattern } from '../ingest/dispense.ts';
import { TrackingEmailStates } from '../tracking-email/states.ts';
import { findVeteranEmails, getTrackingEmail, listTrackingEmails, type ListPosition } from './repository.ts';
import { EmailDetail, EmailSummary, Stats } from './schemas.ts';

// A page's end, opaque to the caller: the last created_at to the microsecond (a JSON date would round
// it to the millisecond) and the last id.
const writeCursor = (end: ListPosition): string => Buffer.from(JSON.stringify([end.createdAt, end.id])).toString('base64url');

function readCursor(cursor: string): ListPosition | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(value) || value.length !== 2) return undefined;
    const [createdAt, id] = value as unknown[];
    if (typeof createdAt !== 'string' || !/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00$/.test(createdAt)) return undefined;
    if (typeof id !== 'string' || !isUuid(id)) return undefined;
    // The shape admits 2026-13-45 99:99:99, which Postgres would refuse with a 500: a real instant only.
    const at = new Date(`${createdAt.slice(0, 10)}T${createdAt.slice(11, 26)}Z`);
    if (Number.isNaN(at.getTime()) || at.toISOString().slice(0, 19) !== `${createdAt.slice(0, 10)}T${createdAt.slice(11, 19)}`)
      return undefined;
    return { createdAt, id };
  } catch {
    return undefined;
  }
}

export const operatorRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/tracking-emails',
    {
      schema: {
        operationId: 'listTrackingEmails',
        summary: 'Tracking emails, newest first, by state or AAL state',
        querystring: Type.Object({
          state: Type.Optional(Type.Union(TrackingEmailStates.map((s) => Type.Literal(s)))),
          aalState: Type.Optional(
            Type.Union([Type.Literal('failed'), Type.Literal('unpostable')], { description: 'emails whose AAL event is in this state' }),
          ),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
          before: Type.Optional(Type.String({ format: 'date-time', description: 'emails created before this instant' })),
          cursor: Type.Optional(Type.String({ maxLength: 200, description: 'the next page: nextCursor of the page before' })),
        }),
        response: {
          200: Type.Object({
            emails: Type.Array(EmailSummary),
            nextCursor: Type.Optional(Type.String({ description: 'present when the page is full: pass it as cursor for the next page' })),
          }),
          ...errorResponses(400, 401, 429),
        },
      },
    },
    async (request) => {
      const { state, aalState, limit, before, cursor } = request.query;
      const after = cursor === undefined ? undefined : readCursor(cursor);
      if (cursor !== undefined && after === undefined) throw app.httpErrors.badRequest('querystring/cursor is not a cursor this list gave');
      const beforeDate = before === undefined ? undefined : new Date(before);
      if (beforeDate !== undefined && !(beforeDate.getUTCFullYear() >= 1970 && beforeDate.getUTCFullYear() <= 9999)) {
        throw app.httpErrors.badRequest('querystring/before must be a date-time between the years 1970 and 9999');
      }
      const page = await listTrackingEmails(app.sql, { state, aalState, limit, before: beforeDate, after });
      return { emails: page.emails, ...(page.end ? { nextCursor: writeCursor(page.end) } : {}) };
    },
  );

  // A POST, so that the ICN travels in the body and never in a URL that proxies and access logs keep.
  app.post(
    '/v1/tracking-emails/search',
    {
      schema: {
        operationId: 'searchTrackingEmails',
        summary: "A veteran's tracking emails by ICN, newest first",
        body: Type.Object(
          {
            patientIcn: Type.String({ pattern: IcnPattern, description: "the veteran's ICN, e.g. 1012345678V123456" }),
            limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ emails: Type.Array(EmailSummary) }), ...errorResponses(400, 401, 429) },
      },
    },
    async (request) => ({ emails: await findVeteranEmails(app.sql, request.body.patientIcn, request.body.limit) }),
  );

  app.get(
    '/v1/tracking-emails/:id',
    {
      schema: {
        operationId: 'getTrackingEmail',
        summary: 'One tracking email: packages, sends with their status history, AAL event',
        params: Type.Object({ id: Type.String({ format: 'uuid', pattern: UuidPattern }) }),
        response: { 200: EmailDetail, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const email = await getTrackingEmail(app.sql, request.params.id);
      if (!email) throw app.httpErrors.notFound(`no tracking email ${request.params.id}`);
      return email;
    },
  );

  app.get(
    '/v1/stats',
    {
      schema: {
        operationId: 'getStats',
        summary: 'Rows by state of dispenses, emails, notifications and AAL events',
        response: { 200: Stats, ...errorResponses(401, 429) },
      },
    },
    async () => {
      const { counts, estimated } = await stateCounts(app.sql);
      return {
        dispenses: counts.medication_dispense,
        emails: counts.tracking_email,
        notifications: counts.notification,
        aalEvents: counts.aal_event,
        ...(estimated.length > 0 && { estimated }),
      };
    },
  );
};

/** GET /metrics: Prometheus text format. No PII in any label, so it is served without a token. */
export const metricsRoute: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/metrics',
    {
      schema: {
        operationId: 'getMetrics',
        summary: 'Prometheus metrics (no PII)',
        response: {
          200: { content: { 'text/plain': { schema: Type.String({ description: 'Prometheus text exposition format 0.0.4' }) } } },
          ...errorResponses(503),
        },
      },
    },
    async (_request, reply) => {
      await app.metrics.collectFromDatabase();
      reply.type(app.metrics.registry.contentType);
      return app.metrics.registry.metrics();
    },
  );
};
