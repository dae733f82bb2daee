// POST /v1/jobs/<job>: run a job now and answer what it did. Safe while the same job runs elsewhere.
import { Type, type FastifyPluginAsyncTypebox, type Static, type TSchema } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { errorResponses } from '../http/schemas.ts';
import type { JobName } from './runner.ts';

const GroupingResult = Type.Object({
  emailsCreated: Type.Integer(),
  dispensesGrouped: Type.Integer(),
  dispensesExcluded: Type.Integer({ description: 'shipped before DELIVERY_START_AT, left to MHV' }),
  dispensesHeld: Type.Integer({
    description: "shipped within CUTOVER_HOLD_HOURS of DELIVERY_START_AT, held until MHV's export is compared",
  }),
  skipped: Type.Boolean({ description: 'other instances were grouping every partition at that moment' }),
});

const AalResult = Type.Object({
  posted: Type.Integer(),
  retried: Type.Integer({ description: 'transient failures, retried later with backoff' }),
  failed: Type.Integer({ description: 'refused by the AAL, or out of attempts' }),
  released: Type.Integer({ description: 'claimed but handed back unposted, attempt refunded (shutdown, or posting paused)' }),
  paused: Type.Boolean({
    description:
      'AAL posting is paused on every instance: MHV refused our credentials (a 403, or a 401 to the session request), or the AAL is not answering',
  }),
});

const SendResult = Type.Object({
  sent: Type.Integer(),
  recovered: Type.Integer({ description: 'found already at VA Notify by reference and recorded instead of sent again' }),
  retried: Type.Integer({ description: 'transient failures, retried later with backoff' }),
  failed: Type.Integer({ description: 'refused by VA Notify (400), or out of attempts' }),
  released: Type.Integer({
    description:
      "claimed but not sent by this run: handed back (sending paused, or shutdown), or claimed by another sender after this claim's lease ran out",
  }),
  paused: Type.Boolean({
    description:
      'sending is paused on every instance: VA Notify rejected our credentials (401/403), has no send endpoint at the configured URL (404), is over its rate or daily limit (429), or is not answering (5xx, timeouts)',
  }),
  deliveryMode: Type.Optional(
    Type.Union([Type.Literal('shadow'), Type.Literal('off')], {
      description: 'present when DELIVERY_MODE is shadow or off: the run sent nothing (every count 0), as that mode never sends',
    }),
  ),
});

const SweepDone = Type.Object({
  status: Type.Literal('done'),
  polled: Type.Integer({ description: 'notifications asked about at VA Notify (GET by id) and answered' }),
  statusesApplied: Type.Integer({ description: 'polls whose answer moved a status forward' }),
  expired: Type.Integer({ description: 'notifications VA Notify no longer has (404 past its retention) that never finished' }),
  notFound: Type.Integer({ description: '404 for a notification younger than the retention: asked again later' }),
  errors: Type.Integer({ description: 'polls and lookups VA Notify did not answer (timeouts, 5xx, 429): asked again later' }),
  adopted: Type.Integer({ description: 'orphaned sends VA Notify had: recorded, not sent again' }),
  released: Type.Integer({ description: 'orphaned sends VA Notify did not have: queued for sending' }),
  replayed: Type.Integer({ description: 'temporary failures queued to be sent again' }),
  failed: Type.Integer({ description: 'emails failed because they had used all their attempts' }),
  aalReleased: Type.Integer({ description: 'AAL events whose worker claim had expired, made due again' }),
  statusEventsExpired: Type.Integer({
    description: 'status events for a notification never stored (and not adopted by its reference) that waited 24 hours: removed',
  }),
  vaNotifyRejected: Type.Boolean({ description: 'VA Notify rejected our credentials (401/403): polling stopped for this run' }),
  stopped: Type.Boolean({ description: 'the run stopped early (shutdown)' }),
});

const SweepAlreadyRunning = Type.Object({
  status: Type.Literal('already_running', { description: 'another instance is sweeping; this request did nothing' }),
});

const RetentionDone = Type.Object({
  status: Type.Literal('done'),
  inboundBodies: Type.Integer({ description: 'raw CMOP bodies emptied (the row, its outcome and its error kept)' }),
  inboundMessages: Type.Integer({ description: 'inbound message rows removed (body emptied, no dispense left naming it)' }),
  trackingEmails: Type.Integer({ description: 'final tracking emails removed with their whole history' }),
  dispenses: Type.Integer({ description: 'dispenses removed: those of the removed emails, and cancelled or excluded ones' }),
  notifications: Type.Integer({ description: 'notifications removed' }),
  statusEvents: Type.Integer({ description: 'delivery-status events removed (also late ones that matched no notification)' }),
  aalEvents: Type.Integer({ description: 'AAL events removed (posted, or unpostable)' }),
  dispenseKeysKept: Type.Integer({ description: 'event keys of removed emailed dispenses kept (hashed) so that a resend is a duplicate' }),
  dispenseKeysPurged: Type.Integer({ description: 'kept event keys removed after DISPENSE_KEY_RETENTION_DAYS' }),
  batches: Type.Integer({ description: 'batches committed, each one short transaction' }),
  lockTimeouts: Type.Integer({ description: 'batches rolled back because a row they needed stayed locked: the next run takes them up' }),
  yieldedMs: Type.Integer({
    description:
      "milliseconds the run waited before its batches: its first look at the pipeline's rate (two looks, 2 s apart), then while the pipeline wrote more than RETENTION_YIELD_ROWS_PER_SECOND rows a second",
  }),
  stopped: Type.Boolean({ description: 'the run stopped early (shutdown)' }),
  more: Type.Boolean({ description: 'the run reached its 30-second budget with work left; on a timer the next run starts at once' }),
});

const RetentionAlreadyRunning = Type.Object({
  status: Type.Literal('already_running', { description: 'another instance is running retention; this request did nothing' }),
});

export const jobRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const errors = errorResponses(401, 429, 503);
  /** POST /v1/jobs/<job>: runs the job on this instance and answers what it did. */
  const jobRoute = (job: JobName, operationId: string, summary: string, result: TSchema) =>
    app.post(`/v1/jobs/${job}`, { schema: { operationId, summary, response: { 200: result, ...errors } } }, (request) =>
      app.jobs.run(job, request.log as Logger),
    );

  jobRoute('grouping', 'runGroupingJob', 'Group ready pending dispenses into tracking emails now', GroupingResult);
  app.post(
    '/v1/jobs/send',
    {
      schema: {
        operationId: 'runSendJob',
        summary: 'Send queued tracking emails through VA Notify now',
        response: { 200: SendResult, ...errors },
      },
    },
    async (request) => {
      const deliveryMode = app.config.DELIVERY_MODE;
      // Outside live mode there may be no VA Notify at all (and so no send job): nothing is sent either way.
      if (deliveryMode !== 'live') return { sent: 0, recovered: 0, retried: 0, failed: 0, released: 0, paused: false, deliveryMode };
      return app.jobs.run<Static<typeof SendResult>>('send', request.log as Logger);
    },
  );
  // Another instance sweeping is a normal answer, not a conflict: its run covers the same work.
  jobRoute('sweep', 'runSweepJob', 'Run the fallback sweep now', Type.Union([SweepDone, SweepAlreadyRunning]));
  jobRoute(
    'retention',
    'runRetentionJob',
    'Remove raw bodies and final histories past their retention now',
    Type.Union([RetentionDone, RetentionAlreadyRunning]),
  );
  jobRoute('aal', 'runAalJob', 'Post pending AAL events now', AalResult);
};
