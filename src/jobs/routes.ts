// POST /v1/jobs/<job>: run a job now and answer what it did. Safe while the same job runs elsewhere.
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { errorResponses } from '../http/schemas.ts';

const GroupingResult = Type.Object({
  emailsCreated: Type.Integer(),
  dispensesGrouped: Type.Integer(),
  dispensesExcluded: Type.Integer({ description: 'shipped before DELIVERY_START_AT, left to MHV' }),
  skipped: Type.Boolean({ description: 'another instance was grouping at that moment' }),
});

const AalResult = Type.Object({
  posted: Type.Integer(),
  retried: Type.Integer({ description: 'transient failures, retried later with backoff' }),
  failed: Type.Integer({ description: 'refused by the AAL, or out of attempts' }),
  released: Type.Integer({ description: 'claimed but handed back unposted (shutdown)' }),
});

const SendResult = Type.Object({
  sent: Type.Integer(),
  recovered: Type.Integer({ description: 'found already at VA Notify by reference and recorded instead of sent again' }),
  retried: Type.Integer({ description: 'transient failures, retried later with backoff' }),
  failed: Type.Integer({ description: 'refused by VA Notify (400), or out of attempts' }),
  skipped: Type.Integer({ description: 'claimed but handed back unsent (sending paused, or shutdown)' }),
  paused: Type.Boolean({ description: 'sending is paused because VA Notify rejected our credentials' }),
});

export const jobRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const errors = errorResponses(401, 429, 503);
  app.post('/v1/jobs/grouping', { schema: { response: { 200: GroupingResult, ...errors } } }, () =>
    app.jobs.run<Static<typeof GroupingResult>>('grouping'),
  );
  app.post('/v1/jobs/send', { schema: { response: { 200: SendResult, ...errors } } }, () =>
    app.jobs.run<Static<typeof SendResult>>('send'),
  );
  app.post('/v1/jobs/aal', { schema: { response: { 200: AalResult, ...errors } } }, () =>
    app.jobs.run<Static<typeof AalResult>>('aal'),
  );
};
