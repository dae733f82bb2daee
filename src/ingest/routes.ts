// POST /v1/dispenses: the HTTP door to ingest. A thin adapter: it reads the raw body, hands it to
// ingest.ts and answers with HL7 ACKs or a JSON summary. Registered inside the internal scope, whose
// bearer-token hook answers 401 before any of this runs.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errorResponses } from '../http/schemas.ts';
import { ingestHl7, ingestJson, type IngestOutcome, type IngestOutcomeCounts } from './ingest.ts';

export const Hl7ContentTypes = ['application/hl7-v2', 'x-application/hl7-v2+er7', 'text/plain'] as const;
const Hl7Types = new Set<string>(Hl7ContentTypes);
const AcceptedTypes = new Set<string>([...Hl7ContentTypes, 'application/json']);

const Hl7Acks = Type.String({ description: 'one HL7 ACK (MSH + MSA) per message, segments ended by CR' });

const EventError = Type.Object({
  index: Type.Optional(Type.Integer({ description: 'position of the event in the array; absent for a body-level problem' })),
  field: Type.Optional(Type.String({ description: 'dotted path of the bad field, e.g. patient.icn' })),
  message: Type.String(),
});

const IngestSummary = Type.Object({
  inboundMessageId: Type.Integer({ description: 'the stored request body' }),
  received: Type.Integer({ description: 'events in the body' }),
  inserted: Type.Integer({ description: 'events stored now' }),
  duplicates: Type.Integer({ description: 'valid events already stored before' }),
  conflicts: Type.Integer({
    description:
      'events already stored, sent again with another ICN or carrier: kept for review (medication_dispense_conflict), not applied; each listed in errors',
  }),
  rejected: Type.Integer({ description: 'invalid events, each listed in errors' }),
  errors: Type.Array(EventError),
});

/** The media type without parameters, lowercased: `application/hl7-v2; charset=utf-8` → `application/hl7-v2`. */
function essence(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

export interface IngestRoutesOptions {
  /** Told how many events of a body ended how (for the ingest counter); called only for counts above 0. */
  onOutcome?: (outcome: IngestOutcome, count: number) => void;
}

/** Seconds a producer is told to wait when every ingest slot is taken: about one large body's work. */
const IngestRetryAfterSeconds = 5;

/** The least a body is counted as: a small body still costs its request, parsing and statements. */
const MinBodyWeightBytes = 16 * 1024;

/**
 * The ingest body bytes in work at once. A body is counted from before it is read until it is
 * answered (or its client goes away before the handler runs), as its Content-Length (at least
 * MinBodyWeightBytes; INGEST_BODY_LIMIT_BYTES when the length is not given), so that the memory
 * ingest takes is bounded by INGEST_BYTES_IN_WORK whatever the mix: many small bodies from producers
 * posting at once are all taken, while large bodies beyond the budget are answered 503 unread.
 * Without it, a handful of large bodies at once would take the whole capped heap, and the process
 * with it (test/process/ingest-overload.test.ts).
 */
class IngestBudget {
  #free: number;
  constructor(bytes: number) {
    this.#free = bytes;
  }

  /** A release function (safe to call twice) when `weight` bytes are free, else undefined. */
  take(weight: number): (() => void) | undefined {
    if (weight > this.#free) return undefined;
    this.#free -= weight;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#free += weight;
    };
  }
}

/** What a body is counted as in the budget (see IngestBudget). */
function bodyWeight(contentLength: string | undefined, bodyLimit: number): number {
  const length = contentLength === undefined ? Number.NaN : Number(contentLength);
  if (!Number.isSafeInteger(length) || length < 0) return bodyLimit;
  return Math.max(MinBodyWeightBytes, Math.min(length, bodyLimit));
}

declare module 'fastify' {
  interface FastifyRequest {
    releaseIngestSlot?: () => void;
    ingestHandlerStarted?: boolean;
  }
}

export const ingestRoutes: FastifyPluginAsyncTypebox<IngestRoutesOptions> = async (app, options) => {
  const bodyLimit = app.config.INGEST_BODY_LIMIT_BYTES;
  const maxRecordsPerBody = app.config.INGEST_MAX_RECORDS_PER_BODY;
  const budget = new IngestBudget(app.config.INGEST_BYTES_IN_WORK);
  const report = (counts: IngestOutcomeCounts) => {
    for (const [outcome, count] of Object.entries(counts) as [IngestOutcome, number][]) {
      if (count > 0) options.onOutcome?.(outcome, count);
    }
  };

  // Any other type is answered 415 before the body is read, and not stored: it is not a feed.
  app.addHook('preParsing', async (request, reply) => {
    const type = essence(request.headers['content-type']);
    if (!AcceptedTypes.has(type)) {
      throw app.httpErrors.unsupportedMediaType(
        `${type === '' ? 'no content type' : `content type ${type}`} is not accepted: send ${[...AcceptedTypes].join(', ')}`,
      );
    }
    const release = budget.take(bodyWeight(request.headers['content-length'], bodyLimit));
    if (release === undefined) {
      // Answered before the body is read, with the connection kept: Node discards the rest of the
      // upload as it arrives and the producer reads the 503, which closing the connection would lose.
      request.log.warn({ bytesInWork: app.config.INGEST_BYTES_IN_WORK }, 'ingest at its limit of body bytes in work: answered 503');
      const message = `ingest is at its limit of ${app.config.INGEST_BYTES_IN_WORK} body bytes in work at once: retry after ${IngestRetryAfterSeconds} seconds`;
      return reply
        .status(503)
        .header('retry-after', String(IngestRetryAfterSeconds))
        .send({ statusCode: 503, error: 'Service Unavailable', message });
    }
    request.releaseIngestSlot = release;
  });
  // The slot is given back once the body is answered; a body whose handler never ran (too large,
  // unreadable, or its client gone) gives it back then.
  app.addHook('onResponse', async (request) => request.releaseIngestSlot?.());
  app.addHook('onRequestAbort', async (request) => {
    if (!request.ingestHandlerStarted) request.releaseIngestSlot?.();
  });

  // Every accepted type arrives as the raw string: the body must be stored before it is parsed,
  // JSON included.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([...AcceptedTypes], { parseAs: 'string', bodyLimit }, (_request, body, done) => {
    done(null, body);
  });

  app.post(
    '/v1/dispenses',
    {
      bodyLimit,
      schema: {
        operationId: 'ingestDispenses',
        summary: 'Ingest CMOP dispense events (HL7 v2 or canonical JSON)',
        consumes: [...AcceptedTypes],
        body: Type.String({ description: 'HL7 v2 message(s), or one JSON dispense event or an array of them' }),
        response: {
          200: {
            content: {
              'application/hl7-v2': { schema: Hl7Acks },
              'application/json': { schema: IngestSummary },
            },
          },
          400: {
            content: {
              'application/hl7-v2': { schema: Hl7Acks },
              'application/json': { schema: Type.Union([IngestSummary, Type.Ref('ErrorBody')]) },
            },
          },
          ...errorResponses(401, 413, 415, 429, 503),
        },
      },
    },
    async (request, reply) => {
      request.ingestHandlerStarted = true;
      try {
        return await ingest(request, reply);
      } finally {
        request.releaseIngestSlot?.();
      }
    },
  );

  async function ingest(request: FastifyRequest, reply: FastifyReply) {
    const contentType = request.headers['content-type'] ?? '';
    const body = typeof request.body === 'string' ? request.body : '';
    if (Hl7Types.has(essence(contentType))) {
      const result = await ingestHl7(app.sql, { source: 'http', contentType, body, maxRecordsPerBody });
      report(result.counts);
      request.log.info(
        {
          inboundMessageId: result.inboundMessageId,
          outcome: result.outcome,
          messages: result.messages,
          acks: result.acksByCode,
          inserted: result.inserted,
          duplicates: result.duplicates,
          unprocessable: result.unprocessable,
        },
        'HL7 dispense body ingested',
      );
      return reply.status(result.statusCode).type('application/hl7-v2').send(result.acks);
    }
    const result = await ingestJson(app.sql, { source: 'http', contentType, body, maxRecordsPerBody });
    report(result.counts);
    const { inboundMessageId, received, inserted, duplicates, rejected } = result.summary;
    request.log.info(
      { inboundMessageId, outcome: result.outcome, received, inserted, duplicates, rejected },
      'JSON dispense body ingested',
    );
    return reply.status(result.statusCode).type('application/json').send(result.summary);
  }
};
