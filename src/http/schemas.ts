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
