// The cut-over hold, for the on-call engineer: GET /v1/cutover shows what is held and what was
// decided; POST /v1/cutover/release decides the held packages from MHV's export.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { cutoverBounds } from '../grouping/repository.ts';
import { acceptCsvOnly, MhvExportBody } from '../http/csv-body.ts';
import { errorResponses } from '../http/schemas.ts';
import { cutoverStatus } from './repository.ts';
import { parseMhvJobRunAt, releaseFromExport, ReleaseInputError } from './release.ts';

/** A few days of MHV's exported rows around the cut-over (about 52 bytes a row: some 80,000 rows). */
const ReleaseBodyLimitBytes = 4 * 1024 * 1024;

const Count = Type.Integer({ minimum: 0 });
const Counts = Type.Object({ packages: Count, dispenses: Count });
const Decided = Type.Object({ packages: Count, dispenses: Count, trackingNumbers: Type.Array(Type.String()) });
const Instant = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

const CutoverStatus = Type.Object({
  deliveryStartAt: Instant,
  holdHours: Count,
  holdWindow: Type.Union(
    [Type.Object({ from: Type.String({ format: 'date-time' }), to: Type.String({ format: 'date-time' }) }), Type.Null()],
    {
      description: 'shipped-at from (inclusive) to (exclusive) that is held; null without DELIVERY_START_AT or with CUTOVER_HOLD_HOURS=0',
    },
  ),
  held: Type.Object({ packages: Count, dispenses: Count, oldestHeldAt: Instant }),
  emailedByMhv: Counts,
  released: Counts,
  heldPackages: Type.Array(
    Type.Object({
      trackingNumber: Type.String(),
      icnLast4: Type.Union([Type.String(), Type.Null()]),
      dispenses: Count,
      shippedAt: Instant,
      heldAt: Type.String({ format: 'date-time' }),
    }),
    { description: 'held packages, longest held first, up to limit' },
  ),
});

const ReleaseResult = Type.Object({
  exportRows: Count,
  released: Decided,
  emailedByMhv: Decided,
  stillHeld: Decided,
});

export const cutoverRoutes: FastifyPluginAsyncTypebox = async (app) => {
  acceptCsvOnly(app, ReleaseBodyLimitBytes);

  app.get(
    '/v1/cutover',
    {
      schema: {
        operationId: 'getCutoverHold',
        summary: 'The cut-over hold: its window, the packages held and what was decided',
        querystring: Type.Object({ limit: Type.Integer({ minimum: 0, maximum: 5000, default: 500 }) }, { additionalProperties: false }),
        response: { 200: CutoverStatus, ...errorResponses(400, 401, 429) },
      },
    },
    async (request) => {
      const { config } = app;
      const bounds = config.CUTOVER_HOLD_HOURS > 0 ? cutoverBounds(config.DELIVERY_START_AT ?? null, config.CUTOVER_HOLD_HOURS) : null;
      const status = await cutoverStatus(app.sql, request.query.limit);
      return {
        deliveryStartAt: config.DELIVERY_START_AT?.toISOString() ?? null,
        holdHours: config.CUTOVER_HOLD_HOURS,
        holdWindow: bounds === null ? null : { from: bounds.excludeBefore.toISOString(), to: bounds.holdUntil.toISOString() },
        ...status,
      };
    },
  );

  app.post(
    '/v1/cutover/release',
    {
      bodyLimit: ReleaseBodyLimitBytes,
      schema: {
        operationId: 'releaseCutoverHold',
        summary: "Decide the held packages from MHV's export (CSV), per tracking number",
        ...MhvExportBody,
        querystring: Type.Object(
          {
            mhvJobRunAt: Type.Optional(
              Type.String({ description: "when the last run of MHV's email job before the export started (ISO 8601 with offset)" }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: ReleaseResult, ...errorResponses(400, 401, 413, 415, 429) },
      },
    },
    async (request) => {
      const body = request.body as Buffer | undefined;
      try {
        const mhvJobRunAt = parseMhvJobRunAt(request.query.mhvJobRunAt);
        if (body === undefined || body.length === 0) throw new ReleaseInputError("body: send MHV's export as text/csv");
        const result = await releaseFromExport(app.sql, body, mhvJobRunAt);
        request.log.info(
          {
            released: result.released.packages,
            emailedByMhv: result.emailedByMhv.packages,
            stillHeld: result.stillHeld.packages,
            exportRows: result.exportRows,
          },
          "cut-over: held packages decided from MHV's export",
        );
        return result;
      } catch (error) {
        if (error instanceof ReleaseInputError) throw app.httpErrors.badRequest(error.message);
        throw error;
      }
    },
  );
};
