// Response shapes shared by every route.
import { Type } from '@sinclair/typebox';

export const ErrorBody = Type.Object(
  { statusCode: Type.Integer(), error: Type.String(), message: Type.String() },
  { $id: 'ErrorBody', description: 'every 4xx and 5xx answer' },
);

/** The error answers a route can give, for its `response` schema. */
export function errorResponses(...codes: number[]) {
  return Object.fromEntries(codes.map((code) => [code, ErrorBody]));
}

/** A uuid within other text: 8-4-4-4-12 hexadecimal digits, in either case. */
export const UuidText = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';

/**
 * A uuid as a request may give it: the `uuid` format alone also passes RFC 4122's URN form
 * (`urn:uuid:...`), which Postgres refuses to read, so such an id failed its query with a 500.
 */
export const UuidPattern = `^${UuidText}$`;
const Uuid = new RegExp(UuidPattern);

/** Whether the whole of `value` is a uuid as {@link UuidPattern} reads one. */
export function isUuid(value: string): boolean {
  return Uuid.test(value);
}
