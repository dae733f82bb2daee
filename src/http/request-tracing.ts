// Every request is traceable: it carries an id (the caller's x-request-id, or a new one) in its answer,
// in each of its log lines and in those of the job runs it triggers; and it is counted and timed per
// route and status.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.ts';

export const RequestIdHeader = 'x-request-id';

/**
 * An id a caller may choose: short, and of characters that cannot break a log line or a header.
 * Anything else is replaced, not refused: a trace id is no reason to turn a request away.
 */
const AcceptableRequestId = /^[A-Za-z0-9._:@+=/-]{1,128}$/;

/** Fastify's genReqId: the caller's x-request-id when acceptable, else a new uuid. */
export function requestIdOf(request: IncomingMessage): string {
  const given = request.headers[RequestIdHeader];
  return typeof given === 'string' && AcceptableRequestId.test(given) ? given : randomUUID();
}

export function traceRequests(app: FastifyInstance, metrics: Metrics): void {
  // onSend runs for every answer, errors and unknown routes included.
  app.addHook('onSend', async (request, reply, payload) => {
    reply.header(RequestIdHeader, request.id);
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    // The route's pattern, never the URL: ids in paths and unknown URLs would make a series each.
    const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) };
    metrics.httpRequests.inc(labels);
    metrics.httpRequestDuration.observe(labels, reply.elapsedTime / 1000);
  });
}
