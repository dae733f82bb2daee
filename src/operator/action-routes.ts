// POST /v1/tracking-emails/resend and POST /v1/aal-events/retry: an operator sends an email again, or
// posts an AAL event again, once the cause of the failure is mended. Each answers, per id named, what
// was done and, when nothing was, why.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { errorResponses, UuidPattern } from '../http/schemas.ts';
import { ResendableStates } from '../tracking-email/states.ts';
import { resendTrackingEmails, retryAalEvents } from './actions.ts';

const EmailIds = (description: string) =>
  Type.Array(Type.String({ format: 'uuid', pattern: UuidPattern }), { minItems: 1, maxItems: 500, uniqueItems: true, description });

const ResendResult = Type.Object({
  results: Type.Array(
    Type.Object({
      id: Type.String({ format: 'uuid' }),
      outcome: Type.Union([
        Type.Literal('resent'),
        Type.Literal('already_resent'),
        Type.Literal('not_resendable'),
        Type.Literal('not_found'),
      ]),
      resentAs: Type.Optional(Type.String({ format: 'uuid', description: 'the new email (resent, already_resent)' })),
      state: Type.Optional(Type.String({ description: "the email's state (not_resendable)" })),
      reason: Type.Optional(Type.String({ description: 'why it was not resent (not_resendable)' })),
    }),
  ),
});

const AalRetryResult = Type.Object({
  results: Type.Array(
    Type.Object({
      trackingEmailId: Type.String({ format: 'uuid' }),
      outcome: Type.Union([Type.Literal('retried'), Type.Literal('not_retryable'), Type.Literal('not_found')]),
      state: Type.Optional(Type.String({ description: "the AAL event's state (not_retryable, when there is an event)" })),
      reason: Type.Optional(Type.String({ description: 'why it was not retried (not_retryable)' })),
    }),
  ),
});

export const operatorActionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/tracking-emails/resend',
    {
      schema: {
        operationId: 'resendTrackingEmails',
        summary: 'Send named tracking emails again once the cause of their failure is mended',
        body: Type.Object(
          {
            ids: EmailIds(`tracking emails to send again, each in ${ResendableStates.join(', ')}`),
            // Not only white space, and no NUL character, which no Postgres text holds. Linear in the
            // length, so that a long body of spaces costs no more than reading it.
            reason: Type.String({
              minLength: 1,
              maxLength: 500,
              pattern: '^\\s*[^\\s\\u0000][^\\u0000]*$',
              description: 'why (not only white space, no NUL character), kept on each new email for whoever looks at it later; not logged',
            }),
          },
          { additionalProperties: false },
        ),
        response: { 200: ResendResult, ...errorResponses(400, 401, 409, 429) },
      },
    },
    async (request) => {
      // Outside live mode nothing would send the new email: it would sit queued, and in shadow mode
      // be counted as an email sent.
      if (app.config.DELIVERY_MODE !== 'live') {
        throw app.httpErrors.conflict(`resending needs DELIVERY_MODE=live; this service runs in ${app.config.DELIVERY_MODE} mode`);
      }
      const results = await resendTrackingEmails(app.sql, request.body.ids, request.body.reason.trim());
      const resent = results.flatMap((r) => (r.outcome === 'resent' ? [{ emailId: r.id, resentAs: r.resentAs }] : []));
      // Ids only: the reason is the operator's free text, kept in the database, not in the log.
      if (resent.length > 0) request.log.info({ resent }, 'tracking emails resent by an operator');
      return { results };
    },
  );

  app.post(
    '/v1/aal-events/retry',
    {
      schema: {
        operationId: 'retryAalEvents',
        summary: "Post the named emails' failed AAL events again",
        body: Type.Object(
          { trackingEmailIds: EmailIds('the tracking emails whose failed AAL event to post again') },
          { additionalProperties: false },
        ),
        response: { 200: AalRetryResult, ...errorResponses(400, 401, 429) },
      },
    },
    async (request) => {
      const results = await retryAalEvents(app.sql, request.body.trackingEmailIds);
      const retried = results.filter((r) => r.outcome === 'retried').map((r) => r.trackingEmailId);
      if (retried.length > 0) {
        request.log.info({ emailIds: retried }, 'failed AAL events made due again by an operator');
        app.jobs.wake('aal');
      }
      return { results };
    },
  );
};
