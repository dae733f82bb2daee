// The operator routes that take MHV's export (cut-over release, shadow comparison) take it as CSV only.
import { Type } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';

const CsvTypes = ['text/csv', 'application/csv'];

/** A route's `consumes` and `body` for MHV's export, spread into its schema (the OpenAPI document shows them). */
export const MhvExportBody = {
  consumes: CsvTypes,
  body: Type.Unknown({ description: "MHV's export of the Rx tracking emails it sent, as CSV (docs/cutover.md)" }),
};

/**
 * Makes CSV the only body the routes of this plugin take, as a Buffer of at most `bodyLimit` bytes:
 * a JSON or text/plain body is a 415, not an export read some other way.
 */
export function acceptCsvOnly(app: FastifyInstance, bodyLimit: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(CsvTypes, { parseAs: 'buffer', bodyLimit }, (_request, body, done) => {
    done(null, body);
  });
}
