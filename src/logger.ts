// Structured logs that never carry a veteran's identity: pino's redaction removes every field that
// could hold an ICN, an email address, a name, an SSN, a full Rx number or a secret, wherever it sits.
import pino, { type DestinationStream, type Logger } from 'pino';

const sensitiveKeys = [
  'icn', 'patientIcn', 'patient_icn', 'id_value', 'recipient_identifier', 'recipientIdentifier',
  'to', 'email', 'emailAddress', 'email_address',
  'name', 'patientName', 'ssn',
  'rxNumber', 'rx_number', 'drugName', 'drug_name',
  'mhvCorrelationId', 'mhv_correlation_id', 'userProfileId',
  'personalisation', 'tracking_info',
  'authorization', 'token', 'apiKey', 'secret', 'password',
];

export const redactPaths = [
  'req.headers.authorization',
  'req.headers["x-enp-signature"]',
  'req.headers.apptoken',
  'req.headers["x-api-key"]',
  'req.headers.token',
  ...sensitiveKeys.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: redactPaths, censor: '[redacted]' },
      // Request logs name the route, never the query string (it could carry a reference or more).
      serializers: {
        req: (req: { method: string; routeOptions?: { url?: string }; url: string; id: string }) => ({
          id: req.id,
          method: req.method,
          route: req.routeOptions?.url ?? req.url.split('?')[0],
        }),
      },
    },
    destination,
  );
}
