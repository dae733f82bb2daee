// Shapes of the operator views.
import { Type, type Static } from '@sinclair/typebox';

// Postgres hands back Date objects; the serializer writes them as ISO 8601 strings.
const Timestamp = Type.Unsafe<Date | string | null>({ type: ['string', 'null'], format: 'date-time' });

export const EmailSummary = Type.Object({
  id: Type.String({ format: 'uuid', description: 'our id, also the VA Notify reference' }),
  state: Type.String(),
  stateReason: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer(),
  packageCount: Type.Integer(),
  prescriptionCount: Type.Integer(),
  nextAttemptAt: Timestamp,
  lastError: Type.Union([Type.String(), Type.Null()]),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  resentFrom: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], { description: 'the email an operator resent as this one' }),
});

export const StatusEvent = Type.Object({
  status: Type.String(),
  statusReason: Type.Union([Type.String(), Type.Null()]),
  completedAt: Timestamp,
  source: Type.String(),
  receivedAt: Timestamp,
});

export const EmailDetail = Type.Composite([
  EmailSummary,
  Type.Object({
    patientIcn: Type.String({ description: 'shown only in this single view, for the on-call engineer' }),
    hasMhvCorrelationId: Type.Boolean(),
    personalisation: Type.Record(Type.String(), Type.Unknown()),
    resentAs: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], {
      description: 'the email an operator resent this one as: its dispenses are listed there',
    }),
    resendReason: Type.Union([Type.String(), Type.Null()], { description: "the operator's reason, on an email that is a resend" }),
    dispenses: Type.Array(
      Type.Object({
        stationNumber: Type.String(),
        rxLast4: Type.String(),
        fillNumber: Type.Integer(),
        carrier: Type.String(),
        trackingNumber: Type.String(),
        shippedAt: Timestamp,
      }),
    ),
    notifications: Type.Array(
      Type.Object({
        id: Type.String(),
        attempt: Type.Integer(),
        status: Type.String(),
        statusReason: Type.Union([Type.String(), Type.Null()]),
        sentAt: Timestamp,
        completedAt: Timestamp,
        createdAt: Timestamp,
        history: Type.Array(StatusEvent),
      }),
    ),
    aalEvent: Type.Union([
      Type.Object({
        state: Type.String(),
        attempts: Type.Integer(),
        attemptsBeforeRetry: Type.Integer({
          description: "attempts spent before an operator's last retry; AAL_MAX_ATTEMPTS counts from there",
        }),
        lastError: Type.Union([Type.String(), Type.Null()]),
        completionTime: Timestamp,
        postedAt: Timestamp,
      }),
      Type.Null(),
    ]),
  }),
]);

export const Stats = Type.Object({
  dispenses: Type.Record(Type.String(), Type.Integer()),
  emails: Type.Record(Type.String(), Type.Integer()),
  notifications: Type.Record(Type.String(), Type.Integer()),
  aalEvents: Type.Record(Type.String(), Type.Integer()),
  estimated: Type.Optional(
    Type.Array(Type.Union(['dispenses', 'emails', 'notifications', 'aalEvents'].map((s) => Type.Literal(s))), {
      description:
        'sections of large tables whose history states are estimates from the planner statistics; work in progress and failures are counted exactly',
    }),
  ),
});

export type EmailSummaryRow = Static<typeof EmailSummary>;
export type EmailDetailView = Static<typeof EmailDetail>;
