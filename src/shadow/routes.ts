// POST /v1/shadow/compare: the shadow comparison over HTTP, for an operator with an internal token.
// The body is MHV's export; the answer is the summary and every mismatch, as JSON or as CSV.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { acceptCsvOnly, MhvExportBody } from '../http/csv-body.ts';
import { errorResponses } from '../http/schemas.ts';
import { MismatchKinds, type ShadowReport } from './compare.ts';
import { ExportFormatError } from './export.ts';
import { mismatchCsv } from './report.ts';
import { parseWindowBound, runShadowComparison, WindowError } from './run.ts';

/**
 * About a day of CMOP shipments' packages. The comparison runs inside the service, whose heap is
 * capped (npm start, Dockerfile), and an export whose every row is a mismatch makes an answer
 * several times its size. A longer period goes through the CLI (npm run shadow-compare), a process
 * of its own.
 */
const CompareBodyLimitBytes = 1024 * 1024;

const Count = Type.Integer({ minimum: 0 });
const Rate = Type.Number({ minimum: 0, maximum: 1 });

const Summary = Type.Object({
  window: Type.Object({ from: Type.String(), to: Type.String() }),
  export: Type.Object({ rows: Count, badRows: Count, rowsNotCompared: Count }),
  packagesCompared: Count,
  veteransCompared: Count,
  mhv: Type.Object({ packages: Count, emails: Count }),
  service: Type.Object({ packages: Count, emails: Count }),
  matched: Type.Object({ packages: Count, veterans: Count }),
  emailedByMhvOnly: Type.Object({ packages: Count, byReason: Type.Record(Type.String(), Count) }),
  emailedByServiceOnly: Type.Object({ packages: Count }),
  groupedDifferently: Type.Object({ veterans: Count }),
  carrierDiffers: Type.Object({ packages: Count }),
  emailedTwiceByMhv: Type.Object({ packages: Count }),
  packageMismatchRate: Rate,
  veteranMismatchRate: Rate,
});

const Mismatch = Type.Object({
  kind: Type.Union(MismatchKinds.map((k) => Type.Literal(k))),
  icnLast4: Type.Union([Type.String(), Type.Null()]),
  trackingNumbers: Type.Array(Type.String()),
  lines: Type.Array(Type.Integer()),
  carrier: Type.Union([Type.String(), Type.Null()]),
  mhvSentDates: Type.Array(Type.String()),
  shippedAt: Type.Union([Type.String(), Type.Null()]),
  emailIds: Type.Array(Type.String()),
  detail: Type.String(),
});

const CompareResult = Type.Object({ summary: Summary, mismatches: Type.Array(Mismatch) });

const Bound = (bound: 'from' | 'to') =>
  Type.Optional(Type.String({ description: `${bound} of the period (ISO date or date-time); default: the export's span` }));

/** True when the Accept header ranks text/csv above JSON; anything else (or nothing) gets JSON. */
export function prefersCsv(accept: string | undefined): boolean {
  let csv = 0;
  let json = 0;
  for (const range of (accept ?? '').split(',')) {
    const [type = '', ...parameters] = range.split(';').map((part) => part.trim().toLowerCase());
    const q = Number(parameters.find((p) => p.startsWith('q='))?.slice(2) ?? 1);
    if (type === 'text/csv') csv = Math.max(csv, q);
    if (type === 'application/json') json = Math.max(json, q);
  }
  return csv > json;
}

export const shadowRoutes: FastifyPluginAsyncTypebox = async (app) => {
  acceptCsvOnly(app, CompareBodyLimitBytes);

  app.post(
    '/v1/shadow/compare',
    {
      bodyLimit: CompareBodyLimitBytes,
      schema: {
        operationId: 'compareWithMhv',
        summary: "Compare MHV's sent emails (CSV export) with what this service would send",
        ...MhvExportBody,
        querystring: Type.Object({ from: Bound('from'), to: Bound('to') }, { additionalProperties: false }),
        response: {
          200: {
            content: {
              'application/json': { schema: CompareResult },
              'text/csv': { schema: Type.String({ description: 'every mismatch, one per line' }) },
            },
          },
          ...errorResponses(400, 401, 413, 415, 429),
        },
      },
    },
    async (request, reply) => {
      const { from, to } = request.query;
      const body = request.body as Buffer | undefined;
      if (body === undefined || body.length === 0) throw app.httpErrors.badRequest('body: send the MHV export as text/csv');
      let report: ShadowReport;
      try {
        report = await runShadowComparison(app.sql, body, {
          from: from === undefined ? undefined : parseWindowBound(from, 'from'),
          to: to === undefined ? undefined : parseWindowBound(to, 'to'),
        });
      } catch (error) {
        if (error instanceof ExportFormatError || error instanceof WindowError) throw app.httpErrors.badRequest(error.message);
        throw error;
      }
      const s = report.summary;
      request.log.info(
        {
          packagesCompared: s.packagesCompared,
          mismatches: report.mismatches.length,
          badRows: s.export.badRows,
          packageMismatchRate: s.packageMismatchRate,
        },
        'shadow comparison',
      );
      if (prefersCsv(request.headers.accept)) {
        return reply.type('text/csv; charset=utf-8').send(mismatchCsv(report));
      }
      return reply.type('application/json').send(report);
    },
  );
};
