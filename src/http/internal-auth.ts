// Bearer tokens for internal endpoints (ingest, job triggers, operator views). Several tokens may be
// valid at once so that one can be rotated without downtime.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * Compares a presented secret with every accepted one in constant time: hashing first gives equal
 * lengths, and no early exit tells an attacker which token came close. The accepted secrets are
 * hashed once, when the check is built, so that a request hashes only the one it presents.
 */
export function secretMatcher(accepted: readonly string[]): (presented: string | undefined) => boolean {
  const digests = accepted.map(digest);
  return (presented) => {
    if (presented === undefined) return false;
    const presentedDigest = digest(presented);
    let match = false;
    for (const acceptedDigest of digests) match = timingSafeEqual(presentedDigest, acceptedDigest) || match;
    return match;
  };
}

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** An onRequest hook that answers 401 unless an accepted bearer token is presented. */
export function requireBearerToken(accepted: readonly string[]) {
  const matches = secretMatcher(accepted);
  return async function checkBearerToken(request: FastifyRequest, reply: FastifyReply) {
    if (!matches(bearerToken(request))) {
      reply.header('www-authenticate', 'Bearer');
      throw reply.unauthorized('a valid bearer token is required');
    }
  };
}
