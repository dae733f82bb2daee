// Structured logs that never carry a veteran's identity: a redaction pass censors every field that
// could hold an ICN, an email address, a name, an SSN, a full Rx number or a secret, wherever it sits.
import pino, { type DestinationStream, type Logger } from 'pino';

export const SensitiveKeys = [
  'icn',
  'veteranIcn',
  'patientIcn',
  'patient_icn',
  'id_value',
  'recipient_identifier',
  'recipientIdentifier',
  'to',
  'email',
  'emailAddress',
  'email_address',
  'name',
  'patientName',
  'ssn',
  'rxNumber',
  'rx_number',
  'drugName',
  'drug_name',
  'mhvCorrelationId',
  'mhv_correlation_id',
  'userProfileId',
  'personalisation',
  'tracking_info',
  'authorization',
  'token',
  'apiKey',
  'secret',
  'password',
  // A Postgres error's `detail` quotes the row or key it is about ("Key (…, rx_number, …)=(…)").
  'detail',
];

/** Header names that carry credentials, censored like the keys above. */
const CredentialHeaders = ['x-enp-signature', 'apptoken', 'x-api-key'];

const SensitiveNames = new Set([...SensitiveKeys, ...CredentialHeaders]);
const Censor = '[redacted]';
/** Objects nested deeper than this are not logged at all (nothing in this service logs them). */
const MaxDepth = 8;

/**
 * A copy of `value` with every sensitive key censored at any depth; `value` itself when it holds
 * none, so the common log line costs a scan of its keys. Not pino's path-based `redact`: its
 * wildcard paths (`*.icn`, `*.*.icn`, ... for every key) cost more than everything else a callback
 * does in Node, and reach only as deep as the paths written.
 */
export function redactSensitive(value: unknown, depth = 0): unknown {
  // Values that serialise themselves (Date, Buffer, URL) are left to their toJSON.
  if (typeof value !== 'object' || value === null || typeof (value as { toJSON?: unknown }).toJSON === 'function') return value;
  if (depth >= MaxDepth) return '[redacted: nested too deep]';
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const redacted = redactSensitive(item, depth + 1);
      if (redacted !== item) {
        copy ??= value.slice();
        copy[i] = redacted;
      }
    });
    return copy ?? value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const key of Object.keys(value)) {
    const item = (value as Record<string, unknown>)[key];
    const redacted = SensitiveNames.has(key) && item !== undefined ? Censor : redactSensitive(item, depth + 1);
    if (redacted !== item) {
      copy ??= { ...(value as Record<string, unknown>) };
      copy[key] = redacted;
    }
  }
  return copy ?? value;
}

/** Keys whose values pino's serializers below turn into safe fields (errors are censored there). */
const SerializedKeys = new Set(['req', 'res', 'err']);

function redactLine(object: Record<string, unknown>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key of Object.keys(object)) {
    if (SerializedKeys.has(key)) continue;
    const item = object[key];
    const redacted = SensitiveNames.has(key) && item !== undefined ? Censor : redactSensitive(item, 1);
    if (redacted !== item) {
      copy ??= { ...object };
      copy[key] = redacted;
    }
  }
  return copy ?? object;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const logger = pino(
    {
      level,
      formatters: { log: redactLine },
      serializers: {
        // An error's own fields are logged too (a driver error's `detail`, say): censored like the rest.
        err: (error: Error) => redactSensitive(pino.stdSerializers.err(error)),
        // Request logs name the route, never the path or the query string as sent: a path that
        // matches no route may hold anything (an ICN typed into a URL), so it is not logged at all.
        req: (req: { method: string; routeOptions?: { url?: string }; url: string; id: string }) => ({
          id: req.id,
          method: req.method,
          route: req.routeOptions?.url ?? '(no route)',
        }),
      },
    },
    destination,
  );
  // A child's bindings (a request's requestId, a sandbox's name) are written once, when the child is made,
  // and pino's formatters do not see them: censor them here. Children of children inherit this.
  const child = logger.child;
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, redactSensitive(bindings) as typeof bindings, options);
  } as typeof child;
  return logger;
}
