// One error handler for the whole service: client errors keep their message (it names what is
// wrong), server errors are logged with their context and answered without internals.
import type { FastifyError, FastifyInstance } from 'fastify';
import { isDatabaseUnavailable } from '../db/connect.ts';

export function installErrorHandler(app: FastifyInstance): void {
  // Fastify's own 404 quotes the path back; a path may hold anything (an ICN typed into a URL).
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ statusCode: 404, error: 'Not Found', message: `no route for ${request.method} at this path` });
  });
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const statusCode = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500;
    if (statusCode < 500) {
      if (statusCode !== 401 && statusCode !== 404) request.log.info({ statusCode, code: error.code }, error.message);
      return reply.status(statusCode).send({ statusCode, error: httpStatusText(statusCode), message: error.message });
    }
    if (isDatabaseUnavailable(error)) {
      request.log.error({ err: error }, 'database unavailable');
      return reply.status(503).send({ statusCode: 503, error: 'Service Unavailable', message: 'database unavailable, try again' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.status(500).send({ statusCode: 500, error: 'Internal Server Error', message: 'internal error' });
  });
}

const StatusTexts: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  503: 'Service Unavailable',
};

function httpStatusText(statusCode: number): string {
  return StatusTexts[statusCode] ?? 'Error';
}
