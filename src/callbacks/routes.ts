// VA Notify's delivery-status callbacks: authenticate, validate, record, answer. Nothing here calls
// out; the answer comes as soon as the event is committed. VA Notify retries a callback on any
// 5xx (and drops it on a 4xx), so only a body that can never be valid gets a 400, a database
// failure gets a 5xx (in a batch of callbacks recorded together, only the callback whose own event
// failed), and an event for a notification we have not stored yet is a 200 like any other.
import { Type, type FastifyPluginAsyncTypebox, type Static, type TSchema } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { vaNotifySigningSecrets } from '../config.ts';
import { bearerToken, secretMatcher } from '../http/internal-auth.ts';
import { errorResponses, UuidPattern } from '../http/schemas.ts';
import { isoInstantMillis } from '../instant.ts';
import { adoptNotificationByReference, type StatusEvent, type StatusOutcome } from '../status/repository.ts';
import { normaliseStatus } from '../status/notification-status.ts';
import { StatusEventBatcher } from '../status/status-event-batcher.ts';
import { verifyEnpSignature } from './signature.ts';

export interface CallbackRoutesOptions {
  /**
   * Secrets of the API keys whose notifications may call back with an `x-enp-signature`. Defaults
   * to the secrets of VA_NOTIFY_API_KEY and VA_NOTIFY_PREVIOUS_API_KEYS.
   */
  signatureSecrets?: readonly string[];
  /** Told the outcome of every recorded callback (for metrics). */
  onStatusEvent?: (event: { status: string; outcome: StatusOutcome; aalEventCreated: boolean }) => void;
  /** Told of every callback refused: unauthenticated, or a body that can never be valid. */
  onCallbackRefused?: (outcome: 'unauthorized' | 'invalid') => void;
}

const Nullable = <T extends TSchema>(schema: T) => Type.Union([Type.Null(), schema]);

const Timestamp = Type.String({
  pattern: '^\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}(:?\\d{2})?)?$',
  description: 'UTC, as VA Notify writes it: YYYY-MM-DDTHH:MM:SS.ffffffZ',
});

export const CallbackBody = Type.Object(
  {
    id: Type.String({
      pattern: UuidPattern,
      description: "VA Notify's notification id",
    }),
    status: Type.String({ minLength: 1, maxLength: 64 }),
    reference: Type.Optional(Nullable(Type.String({ maxLength: 1000 }))),
    to: Type.Optional(Nullable(Type.String({ description: "the recipient's address: read, never stored or logged" }))),
    created_at: Type.Optional(Nullable(Timestamp)),
    completed_at: Type.Optional(Nullable(Timestamp)),
    sent_at: Type.Optional(Nullable(Timestamp)),
    notification_type: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
    status_reason: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))),
    provider: Type.Optional(Nullable(Type.String({ maxLength: 256 }))),
    provider_payload: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: true, description: 'a VA Notify delivery-status callback' },
);

/** What a callback tells the state machine; `to` (the veteran's address) is left behind. */
export function statusEventFromCallback(body: Static<typeof CallbackBody>): StatusEvent {
  return {
    notificationId: body.id.toLowerCase(),
    status: body.status,
    statusReason: body.status_reason ?? null,
    reference: body.reference ?? null,
    createdAt: body.created_at ?? null,
    sentAt: body.sent_at ?? null,
    completedAt: body.completed_at ?? null,
    provider: body.provider ?? null,
  };
}

const Received = Type.Object({ status: Type.Literal('received') });

const Unauthorized = 'a valid bearer token or x-enp-signature is required';

export const vaNotifyCallbackRoutes: FastifyPluginAsyncTypebox<CallbackRoutesOptions> = async (app, options) => {
  const { config } = app;
  const tokenMatches = secretMatcher(config.VA_NOTIFY_CALLBACK_TOKENS);
  const secrets = (options.signatureSecrets ?? vaNotifySigningSecrets(config)).filter((s) => s.length > 0);
  // Callbacks arriving together share one statement and one commit; each still gets its own outcome.
  const applyOptions = { replayDelayMinutes: config.REPLAY_DELAY_MINUTES, sendMaxAttempts: config.SEND_MAX_ATTEMPTS };
  const batcher = new StatusEventBatcher(app.sql, { source: 'callback', ...applyOptions });
  const rawBodies = new WeakMap<FastifyRequest, string>();
  const tokenAuthenticated = new WeakSet<FastifyRequest>();
  // One answer for every authentication failure: which check failed is not for the caller to know.
  const unauthorized = (reply: FastifyReply) => {
    reply.header('www-authenticate', 'Bearer');
    return app.httpErrors.unauthorized(Unauthorized);
  };

  // The signature covers the body as VA Notify wrote it, so the raw text is kept next to the parsed
  // value. JSON.parse's own message quotes the body (with the recipient's address): never pass it on.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'string', bodyLimit: config.CALLBACK_BODY_LIMIT_BYTES },
    (request, body, done) => {
      const text = body as string;
      rawBodies.set(request, text);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        // Only an authenticated caller learns what is wrong with its body; for any other, the
        // signature check that follows fails on the same text and answers 401.
        if (tokenAuthenticated.has(request)) done(app.httpErrors.badRequest('body is not valid JSON'), undefined);
        else done(null, undefined);
        return;
      }
      done(null, parsed);
    },
  );

  // Refused callbacks are counted too: a VA Notify that presents a token we do not accept (a
  // registration or rotation mistake) shows as `unauthorized`, a body we can never take as `invalid`.
  app.addHook('onResponse', async (_request, reply) => {
    const outcome = reply.statusCode === 401 ? 'unauthorized' : [400, 413, 415].includes(reply.statusCode) ? 'invalid' : undefined;
    if (outcome !== undefined) options.onCallbackRefused?.(outcome);
  });

  app.post(
    '/v1/va-notify/callbacks',
    {
      bodyLimit: config.CALLBACK_BODY_LIMIT_BYTES,
      // Limited here, before authentication, so that a caller guessing tokens or signatures is limited too.
      config: { rateLimit: false },
      schema: {
        operationId: 'receiveVaNotifyCallback',
        summary: 'A VA Notify delivery-status callback',
        security: [{ callbackToken: [] }, { vaNotifySignature: [] }],
        body: CallbackBody,
        response: { 200: Received, ...errorResponses(400, 401, 413, 415, 429, 500, 503) },
      },
      // A bearer token is checked before the body is read. A request without one may still carry
      // a signature, which can only be checked once the body is in.
      onRequest: [
        app.rateLimit({ max: config.CALLBACK_RATE_LIMIT_PER_MINUTE, timeWindow: '1 minute' }),
        async (request, reply) => {
          if (tokenMatches(bearerToken(request))) {
            tokenAuthenticated.add(request);
            return;
          }
          if (request.headers['x-enp-signature'] === undefined) throw unauthorized(reply);
        },
      ],
      preValidation: async (request, reply) => {
        if (tokenAuthenticated.has(request)) return;
        const signature = request.headers['x-enp-signature'];
        const raw = rawBodies.get(request);
        if (typeof signature !== 'string' || raw === undefined || !verifyEnpSignature(raw, signature, secrets)) {
          throw unauthorized(reply);
        }
      },
    },
    async (request) => {
      const body = request.body;
      for (const field of ['created_at', 'sent_at', 'completed_at'] as const) {
        const value = body[field];
        if (typeof value !== 'string') continue;
        // The pattern admits 2026-02-30 and an offset of +99:00; Postgres admits neither, and its
        // error would make VA Notify retry for hours.
        const at = isoInstantMillis(value);
        if (at === undefined) throw app.httpErrors.badRequest(`body/${field} is not a valid date and time`);
        // Events are ordered by completed_at: one far in the future would outrank every real event
        // of its notification for good (the real delivery taken as late, the email replayed).
        if (at > Date.now() + PlausibleHoursAhead * 3_600_000) {
          throw app.httpErrors.badRequest(`body/${field} is more than ${PlausibleHoursAhead} hours in the future`);
        }
      }
      // Postgres text cannot hold NUL; rejecting it here keeps a retry loop (5xx) from starting.
      for (const field of ['status', 'status_reason', 'reference', 'provider'] as const) {
        if (body[field]?.includes('\u0000')) throw app.httpErrors.badRequest(`body/${field} contains a NUL character`);
      }
      const event = statusEventFromCallback(body);
      let result = await batcher.record(event, request.log);
      if (result.outcome === 'pending_notification') {
        const adopted = await adoptNotificationByReference(app.sql, event, { ...applyOptions, log: request.log });
        if (adopted) result = { outcome: 'applied', aalEventCreated: result.aalEventCreated };
      }
      // The metric's label is a status this service knows, or `unrecognised`: a label per string a
      // caller sends would grow the metrics without bound.
      const { status, known } = normaliseStatus(body.status, null);
      options.onStatusEvent?.({ status: known ? status : 'unrecognised', ...result });
      return { status: 'received' as const };
    },
  );
};

/**
 * How far ahead of now a callback's times may lie (clocks drift). Only the future is bounded: a time
 * in the past can only make its event lose to a later one, never outrank the real ones.
 */
export const PlausibleHoursAhead = 24;
