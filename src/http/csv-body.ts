// The operator routes that take MHV's export (cut-over release, shadow comparison) take it as CSV only.
import type { FastifyInstance } from 'fastify';

/**
 * Makes CSV the only body the routes of this plugin take, as a Buffer of at most `bodyLimit` bytes:
 * a JSON or text/plain body is a 415, not an export read some other way.
 */
export function acceptCsvOnly(app: FastifyInstance, bodyLimit: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['text/csv', 'application/csv'], { parseAs: 'buffer', bodyLimit }, (_request, body, done) => {
    done(null, body);
  });
}
