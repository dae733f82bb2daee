// The service's whole configuration: one TypeBox schema over the environment, validated once at
// startup. The Config type is derived from the schema, so the two can never drift apart.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Type, type StaticDecode, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { UuidPattern, UuidText } from './http/schemas.ts';
import { isoInstantMillis, ZonedIsoPattern } from './instant.ts';

const Integer = (options: { default: number; minimum?: number; maximum?: number; description: string }) =>
  Type.Integer({ minimum: 0, ...options });

const Bool = (defaultValue: boolean, description: string) => Type.Boolean({ default: defaultValue, description });

/**
 * A comma-separated list in the environment, a trimmed array in the config. Line breaks separate
 * items too: a secret file (`<NAME>_FILE`) often holds one token per line.
 */
const List = (description: string, defaultValue = '') =>
  Type.Transform(Type.String({ default: defaultValue, description }))
    .Decode((value) =>
      value
        .split(/[,\r\n]/)
        .map((item) => item.trim())
        .filter((item) => item.length > 0),
    )
    .Encode((items) => items.join(','));

const Url = (description: string) => Type.String({ pattern: '^https?://[^\\s/]+', description });
const Uuid = (description: string) => Type.String({ pattern: UuidPattern, description });

const InstantPattern = new RegExp(ZonedIsoPattern);

/** Whether a setting's text is an ISO 8601 instant with its offset, and a real one (src/instant.ts). */
export function isRealInstant(value: string): boolean {
  return InstantPattern.test(value) && isoInstantMillis(value) !== undefined;
}

/** An ISO 8601 instant in the environment, a Date in the config. */
const Instant = (description: string) =>
  Type.Transform(Type.String({ pattern: ZonedIsoPattern, description }))
    .Decode((value) => new Date(value))
    .Encode((date) => date.toISOString());

export const DeliveryModes = ['live', 'shadow', 'off'] as const;
export const EventBusAuths = ['msk-iam', 'scram-sha-512', 'none'] as const;

/** The settings read as instants ({@link Instant}). */
const InstantSettings = ['DELIVERY_START_AT'] as const;

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('test'), Type.Literal('production')], {
    default: 'development',
    description: 'development allows built-in defaults for secrets; production requires every secret and real VA Notify and AAL settings',
  }),
  PORT: Integer({ default: 3000, maximum: 65535, description: 'HTTP port' }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'interface to listen on (0.0.0.0 in a container)' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    {
      default: 'info',
      description: 'pino log level',
    },
  ),

  DATABASE_URL: Type.Optional(
    Type.String({ pattern: '^postgres(ql)?://', description: 'Postgres connection URL; unset starts an embedded PostgreSQL' }),
  ),
  DATABASE_POOL_MAX: Integer({
    default: 10,
    minimum: 2,
    description: 'connections per instance (at least 2: the sweep holds one for its lock)',
  }),
  EMBEDDED_PG_DIR: Type.String({
    default: '.data/postgres',
    minLength: 1,
    description: 'data folder of the embedded PostgreSQL, kept between runs',
  }),

  INTERNAL_API_TOKENS: List('bearer tokens accepted on internal endpoints (ingest, jobs, operator views)'),
  RATE_LIMIT_PER_MINUTE: Integer({ default: 6000, minimum: 1, description: 'requests per minute per client address on internal routes' }),
  TRUST_PROXY: List(
    'addresses or CIDR ranges of the load balancers in front of the service, whose X-Forwarded-For is trusted (also loopback, linklocal, uniquelocal); none trusts no proxy: every client is known by its own address',
    'none',
  ),
  INGEST_BODY_LIMIT_BYTES: Integer({ default: 5 * 1024 * 1024, minimum: 1024, description: 'largest ingest body accepted (413 above)' }),
  INGEST_BYTES_IN_WORK: Integer({
    default: 10 * 1024 * 1024,
    minimum: 1024,
    description:
      'ingest body bytes read and stored at once per instance (each body counted as its Content-Length, at least 16 KiB; a body of unknown length as INGEST_BODY_LIMIT_BYTES); a body beyond it is answered 503 with Retry-After before it is read, so that load never exhausts the heap. At least INGEST_BODY_LIMIT_BYTES',
  }),
  INGEST_MAX_RECORDS_PER_BODY: Integer({
    default: 20_000,
    minimum: 1,
    maximum: 100_000,
    description:
      'HL7 messages and dispenses (RXD segments), or JSON events, one ingest body may hold (and ten segments per record); a body with more is kept and refused whole (400)',
  }),

  GROUPING_QUIET_MINUTES: Integer({ default: 60, description: "a veteran's dispenses are grouped once the newest is this old" }),
  GROUPING_MAX_WAIT_MINUTES: Integer({ default: 1440, description: '... or once the oldest is this old, even if more keep arriving' }),
  GROUPING_BATCH_SIZE: Integer({ default: 5000, minimum: 1, description: 'veterans grouped per grouping run at most' }),
  GROUPING_CONCURRENCY: Integer({
    default: 2,
    minimum: 1,
    maximum: 8,
    description: "a grouping run's transactions at once, each for a share of the veterans by ICN hash (the same on every instance)",
  }),
  EMAIL_INCLUDE_DRUG_NAMES: Bool(false, 'list drug names in the email (PHI; off by default)'),
  EMAIL_MAX_PACKAGES_LISTED: Integer({
    default: 50,
    minimum: 1,
    maximum: 100,
    description:
      'packages one email lists at most (each with up to 20 prescriptions); the rest are counted ("and N more packages"), so the email stays under VA Notify\'s 1 MiB',
  }),
  DELIVERY_MODE: Type.Union(
    DeliveryModes.map((m) => Type.Literal(m)),
    {
      default: 'live',
      description: 'live sends through VA Notify; shadow groups and records what would be sent; off only ingests',
    },
  ),
  DELIVERY_START_AT: Type.Optional(
    Instant('the cut-over instant T: dispenses shipped before it are left to MHV; required in production with DELIVERY_MODE=live'),
  ),
  CUTOVER_HOLD_HOURS: Integer({
    default: 12,
    maximum: 168,
    description:
      "packages shipped within this many hours of DELIVERY_START_AT are held until MHV's export is compared (0: no hold, the instant alone decides)",
  }),

  VA_NOTIFY_BASE_URL: Type.Optional(Url('VA Notify API base URL; unset runs the built-in sandbox')),
  VA_NOTIFY_SERVICE_ID: Type.Optional(Uuid('VA Notify service id (JWT iss)')),
  VA_NOTIFY_API_KEY: Type.Optional(
    Type.String({ minLength: 10, description: 'API key secret, or a combined {name}-{service_id}-{secret} key' }),
  ),
  VA_NOTIFY_TEMPLATE_ID: Type.Optional(Uuid('Rx tracking email template id')),
  VA_NOTIFY_BILLING_CODE: Type.Optional(Type.String({ maxLength: 256, description: 'billing code sent with each email' })),
  VA_NOTIFY_CALLBACK_URL: Type.Optional(Url('per-notification callback_url (https); unset uses the service-level callback')),
  VA_NOTIFY_CALLBACK_TOKENS: List('bearer tokens VA Notify presents on service-level callbacks (each at least 10 characters)'),
  VA_NOTIFY_PREVIOUS_API_KEYS: List(
    'API keys replaced by VA_NOTIFY_API_KEY, still accepted on the x-enp-signature of per-notification callbacks for what they sent',
  ),
  VA_NOTIFY_TIMEOUT_MS: Integer({ default: 10_000, minimum: 100, description: 'timeout of one VA Notify request' }),
  VA_NOTIFY_RATE_LIMIT_PER_MINUTE: Integer({
    default: 2900,
    description: 'VA Notify requests per minute shared by all instances (0: no pacing, for benchmarks only)',
  }),
  VA_NOTIFY_RETENTION_DAYS: Integer({ default: 7, minimum: 1, description: 'after this, VA Notify answers 404 for a notification' }),
  CALLBACK_RATE_LIMIT_PER_MINUTE: Integer({ default: 60_000, minimum: 1, description: 'callback requests per minute per client address' }),
  CALLBACK_BODY_LIMIT_BYTES: Integer({ default: 64 * 1024, minimum: 1024, description: 'largest callback body accepted (413 above)' }),

  SEND_MAX_ATTEMPTS: Integer({ default: 5, minimum: 1, description: 'sends of one email in all, replays included' }),
  SEND_BATCH_SIZE: Integer({ default: 100, minimum: 1, description: 'emails claimed per send run' }),
  SEND_CONCURRENCY: Integer({ default: 10, minimum: 1, description: 'VA Notify requests in flight per instance' }),
  SEND_LEASE_SECONDS: Integer({ default: 120, minimum: 1, description: 'how long a claimed email belongs to one instance' }),
  SEND_RETRY_BASE_SECONDS: Integer({ default: 60, minimum: 1, description: 'first durable retry delay; doubles per attempt, with jitter' }),
  SEND_PAUSE_SECONDS: Integer({
    default: 300,
    minimum: 1,
    description: 'sending pauses this long after VA Notify rejects our credentials or has no send endpoint at its URL',
  }),
  SEND_RATE_LIMIT_PAUSE_SECONDS: Integer({
    default: 60,
    minimum: 1,
    description: 'sending pauses this long after VA Notify answers 429 for its per-minute limit',
  }),
  SEND_UNAVAILABLE_PAUSE_SECONDS: Integer({
    default: 60,
    minimum: 1,
    description: 'sending pauses this long when VA Notify looks down (sends in a row with no usable answer); the next run then probes it',
  }),

  AAL_BASE_URL: Type.Optional(Url('MHV user-management base URL; unset runs the built-in sandbox')),
  AAL_APP_TOKEN: Type.Optional(Type.String({ minLength: 1, description: 'MHV appToken header' })),
  AAL_API_KEY: Type.Optional(Type.String({ minLength: 1, description: 'MHV API gateway x-api-key header' })),
  AAL_ACTIVITY_TYPE: Type.String({ default: 'Rx Tracking Email', minLength: 1, description: 'AAL activityType' }),
  AAL_ACTION: Type.String({ default: 'Rx Tracking Email Delivered', minLength: 1, description: 'AAL action' }),
  AAL_PERFORMER_TYPE: Type.String({ default: 'System', minLength: 1, description: 'AAL performerType' }),
  AAL_TIMEOUT_MS: Integer({ default: 10_000, minimum: 100, description: 'timeout of one AAL request' }),
  AAL_MAX_ATTEMPTS: Integer({ default: 10, minimum: 1, description: 'posts of one AAL event before it is failed' }),
  AAL_BATCH_SIZE: Integer({ default: 100, minimum: 1, description: 'AAL events claimed per run' }),
  AAL_PAUSE_SECONDS: Integer({
    default: 300,
    minimum: 1,
    description: 'AAL posting pauses this long after MHV refuses our credentials (a 403, or a 401 to the session request)',
  }),
  AAL_UNAVAILABLE_PAUSE_SECONDS: Integer({
    default: 60,
    minimum: 1,
    description:
      'AAL posting pauses this long when the AAL looks down (events in a row with no usable answer); the next run then probes it',
  }),

  JOBS_ENABLED: Bool(true, 'run the jobs on timers in this instance'),
  GROUPING_INTERVAL_SECONDS: Integer({ default: 60, minimum: 1, description: 'grouping timer' }),
  SEND_INTERVAL_SECONDS: Integer({ default: 10, minimum: 1, description: 'send timer' }),
  AAL_INTERVAL_SECONDS: Integer({ default: 30, minimum: 1, description: 'AAL timer' }),
  SWEEP_INTERVAL_SECONDS: Integer({ default: 300, minimum: 1, description: 'fallback sweep timer' }),
  STATUS_POLL_AFTER_MINUTES: Integer({ default: 30, description: 'a notification silent this long is polled' }),
  REPLAY_DELAY_MINUTES: Integer({ default: 60, description: 'a temporary failure is sent again after this' }),
  SWEEP_BATCH_SIZE: Integer({ default: 500, minimum: 1, description: 'rows per sweep step' }),
  INBOUND_BODY_RETENTION_DAYS: Integer({
    default: 30,
    description:
      'a raw CMOP body is emptied this long after it was received, once every dispense it carried is final (emailed and the email final, excluded, or cancelled); the row, its outcome and its error stay (0: bodies are kept)',
  }),
  RECORD_RETENTION_DAYS: Integer({
    default: 90,
    description:
      "a final email's whole history (dispenses, email, notifications, status events, AAL event) is removed this long after it was created and last changed, never before its AAL event is posted; also cancelled and excluded dispenses and emptied inbound messages (0: kept forever)",
  }),
  DISPENSE_KEY_RETENTION_DAYS: Integer({
    default: 365,
    description:
      "a hash of a removed emailed dispense's event key is kept this long, so that a CMOP resend of it is a duplicate (0: kept forever)",
  }),
  RETENTION_BATCH_SIZE: Integer({
    default: 100,
    minimum: 1,
    maximum: 10_000,
    description:
      'emails, or inbound messages, per retention batch: one short transaction each (a batch of bodies also ends at 4 × this many messages)',
  }),
  RETENTION_DUTY_PERCENT: Integer({
    default: 25,
    minimum: 1,
    maximum: 100,
    description:
      "the share of a retention run's time spent in batches: after a batch that took d it rests d × (100 − p) / p, leaving the database's CPU to callbacks, ingest and sending (100: batches back to back)",
  }),
  RETENTION_YIELD_ROWS_PER_SECOND: Integer({
    default: 50,
    minimum: 0,
    description:
      'retention waits before each batch (its first too: a run looks at the rate twice, 2 s apart, before it) while the pipeline writes more rows a second than this, all instances together (status callbacks, dispenses ingested, tracking emails grouped, emails sent, AAL events posted), so that a burst of callbacks, a CMOP file, or a grouping, send or AAL run has no retention beside it (0: never waits)',
  }),
  RETENTION_INTERVAL_SECONDS: Integer({ default: 3600, minimum: 1, description: 'retention timer' }),
  SHUTDOWN_GRACE_SECONDS: Integer({ default: 20, minimum: 1, description: 'time in-flight work gets to finish on SIGTERM' }),

  EVENT_BUS_BROKERS: List(
    'Kafka bootstrap brokers (host:port, comma-separated) of the VA Enterprise Event Bus; unset runs no event-bus consumer',
  ),
  EVENT_BUS_TOPIC: Type.String({
    default: 'cmop_medication_dispense',
    pattern: '^[A-Za-z0-9._-]{1,249}$',
    description: 'topic of CMOP dispense events',
  }),
  EVENT_BUS_GROUP_ID: Type.String({ default: 'rx-tracking-email', minLength: 1, description: 'consumer group shared by every instance' }),
  EVENT_BUS_SCHEMA_REGISTRY_URL: Type.Optional(Url('Confluent Schema Registry base URL; required with EVENT_BUS_BROKERS')),
  EVENT_BUS_AUTH: Type.Union(
    EventBusAuths.map((a) => Type.Literal(a)),
    {
      default: 'msk-iam',
      description: 'msk-iam: AWS IAM over SASL/OAUTHBEARER (the Event Bus); scram-sha-512; none (a local broker)',
    },
  ),
  EVENT_BUS_AWS_REGION: Type.String({
    default: 'us-gov-west-1',
    pattern: '^[a-z]{2}(-[a-z]+)+-\\d$',
    description: 'AWS region of the MSK cluster (msk-iam)',
  }),
  EVENT_BUS_AWS_ROLE_ARN: Type.Optional(
    Type.String({
      pattern: '^arn:aws[a-z-]*:iam::\\d{12}:role/.+$',
      description: 'IAM role to assume for the MSK token (msk-iam); unset signs with the default AWS credentials',
    }),
  ),
  EVENT_BUS_SCRAM_USERNAME: Type.Optional(Type.String({ minLength: 1, description: 'SCRAM-SHA-512 user (scram-sha-512)' })),
  EVENT_BUS_SCRAM_PASSWORD: Type.Optional(Type.String({ minLength: 1, description: 'SCRAM-SHA-512 password (scram-sha-512)' })),
  EVENT_BUS_TLS: Type.Optional(Type.Boolean({ description: 'TLS to the brokers; default on outside development' })),
  EVENT_BUS_BATCH_SIZE: Integer({
    default: 500,
    minimum: 1,
    maximum: 10_000,
    description: 'records stored per database transaction at most',
  }),
  EVENT_BUS_SESSION_TIMEOUT_SECONDS: Integer({
    default: 10,
    minimum: 1,
    description:
      "a consumer silent this long leaves the group, and its partitions go to the other instances (the brokers' group.min.session.timeout.ms applies: 6 s on MSK)",
  }),
  EVENT_BUS_RETRY_MAX_SECONDS: Integer({
    default: 30,
    minimum: 1,
    description: 'longest wait between retries while the schema registry, the database or the brokers are unreachable',
  }),

  SANDBOX_CALLBACK_DELAY_MS: Integer({ default: 1000, description: 'sandbox VA Notify: delay before it posts a status callback' }),
});

export type Config = StaticDecode<typeof ConfigSchema>;

/** Settings that may instead be read from a file named by <NAME>_FILE (container secrets). */
export const SecretNames = [
  'VA_NOTIFY_API_KEY',
  'VA_NOTIFY_CALLBACK_TOKENS',
  'VA_NOTIFY_PREVIOUS_API_KEYS',
  'INTERNAL_API_TOKENS',
  'AAL_APP_TOKEN',
  'AAL_API_KEY',
  'DATABASE_URL',
  'EVENT_BUS_SCRAM_USERNAME',
  'EVENT_BUS_SCRAM_PASSWORD',
] as const;

/** Development-only defaults; outside development a secret must be given. */
export const DevelopmentSecrets = {
  INTERNAL_API_TOKENS: 'local-dev-internal-token',
  VA_NOTIFY_CALLBACK_TOKENS: 'local-dev-callback-token',
} as const;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function readSecretFiles(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const resolved = { ...env };
  // A <NAME>_FILE for a setting that is not read from files would be ignored without a word.
  for (const name of Object.keys(ConfigSchema.properties)) {
    if ((SecretNames as readonly string[]).includes(name)) continue;
    if (env[`${name}_FILE`] !== undefined && env[`${name}_FILE`] !== '') {
      throw new ConfigError(`${name}_FILE: ${name} is not read from a file; set ${name} itself (files: ${SecretNames.join(', ')})`);
    }
  }
  for (const name of SecretNames) {
    const path = env[`${name}_FILE`];
    if (path === undefined || path === '') continue;
    if (env[name] !== undefined && env[name] !== '') {
      throw new ConfigError(`${name} and ${name}_FILE are both set; set only one`);
    }
    let value: string;
    try {
      value = readFileSync(path, 'utf8').trim();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new ConfigError(`${name}_FILE: cannot read ${path} (${code})`);
    }
    // An empty file is a secret that was never filled in; taken as unset, it would quietly fall
    // back to a development default or to the embedded database.
    if (value === '') throw new ConfigError(`${name}_FILE: ${path} is empty`);
    resolved[name] = value;
  }
  return resolved;
}

function describeErrors(schema: TSchema, value: unknown): string {
  const lines = [...Value.Errors(schema, value)].map((e) => {
    const name = e.path.replace(/^\//, '') || '(environment)';
    // Never echo a secret's value into an error message.
    const secret = (SecretNames as readonly string[]).includes(name);
    return `${name}: ${e.message}${secret ? '' : ` (got ${JSON.stringify(e.value)})`}`;
  });
  return [...new Set(lines)].join('; ');
}

/** Settings that were renamed: a deployment still setting the old name is refused, not silently run with the default. */
const RenamedSettings: Record<string, keyof Config> = {
  RETENTION_YIELD_CALLBACKS_PER_SECOND: 'RETENTION_YIELD_ROWS_PER_SECOND',
};

/**
 * Reads and validates the configuration. Empty strings count as unset, so a blank line in an env
 * file falls back to the default instead of failing validation.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const withSecrets = readSecretFiles(env);
  const renamed = Object.entries(RenamedSettings)
    .filter(([old]) => withSecrets[old] !== undefined)
    .map(([old, now]) => `${old}: renamed ${now} (its meaning widened); set that instead`);
  if (renamed.length > 0) throw new ConfigError(`invalid configuration: ${renamed.join('; ')}`);
  const input: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = withSecrets[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  const isDevelopment = (input.NODE_ENV ?? 'development') === 'development';
  if (isDevelopment) {
    for (const [name, value] of Object.entries(DevelopmentSecrets)) input[name] ??= value;
  }
  const converted = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, input)) as Record<string, unknown>;
  // TypeBox converts "80.5" to 80 and "1e3" to 1: an integer that is not written as one keeps its
  // text, so that validation names it instead of running with a number nobody wrote.
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const text = withSecrets[key];
    if ((schema as TSchema).type === 'integer' && text !== undefined && text !== '' && !/^\s*-?\d+\s*$/.test(text)) converted[key] = text;
  }
  // The schema's pattern checks an instant's shape; a date JavaScript would roll over is refused here.
  const unreal = InstantSettings.filter((key) => {
    const value = converted[key];
    return typeof value === 'string' && InstantPattern.test(value) && isoInstantMillis(value) === undefined;
  }).map((key) => `${key}: not a real date and time (got ${JSON.stringify(converted[key])})`);
  const shaped = Value.Check(ConfigSchema, converted);
  if (!shaped || unreal.length > 0) {
    const schemaErrors = shaped ? [] : [describeErrors(ConfigSchema, converted)];
    throw new ConfigError(`invalid configuration: ${[...schemaErrors, ...unreal].join('; ')}`);
  }
  const config = Value.Decode(ConfigSchema, converted);
  checkCombinations(config);
  return config;
}

function checkCombinations(config: Config): void {
  const problems: string[] = [];
  // Without the instant a live instance emails every pending dispense, MHV's included: two emails.
  if (config.NODE_ENV === 'production' && config.DELIVERY_MODE === 'live' && config.DELIVERY_START_AT === undefined) {
    problems.push(
      'DELIVERY_START_AT: required in production with DELIVERY_MODE=live (the cut-over instant; without it every package MHV emails is emailed again)',
    );
  }
  if (config.INTERNAL_API_TOKENS.length === 0) problems.push('INTERNAL_API_TOKENS: required outside development');
  // The development defaults are published in this repository: anyone could present them.
  if (config.NODE_ENV !== 'development') {
    for (const [name, value] of Object.entries(DevelopmentSecrets)) {
      if (config[name as keyof typeof DevelopmentSecrets].includes(value))
        problems.push(`${name}: holds the public development token; set a secret one`);
    }
  }
  if (config.DATABASE_URL !== undefined) {
    const problem = databaseUrlProblem(config.DATABASE_URL);
    if (problem) problems.push(`DATABASE_URL: ${problem}`);
  }
  if (config.INTERNAL_API_TOKENS.some((t) => t.length < 16)) problems.push('INTERNAL_API_TOKENS: each token needs at least 16 characters');
  if (config.VA_NOTIFY_CALLBACK_TOKENS.some((t) => t.length < 10)) {
    problems.push('VA_NOTIFY_CALLBACK_TOKENS: each token needs at least 10 characters (VA Notify requires it)');
  }
  const badProxies = config.TRUST_PROXY.filter((entry) => !isProxyAddress(entry));
  if (badProxies.length > 0)
    problems.push(`TRUST_PROXY: not an address, a CIDR range or loopback/linklocal/uniquelocal: ${badProxies.join(', ')}`);
  if (config.TRUST_PROXY.some((entry) => /\/0+$/.test(entry))) {
    problems.push(
      "TRUST_PROXY: a /0 range trusts every address, so any client could choose its own address; name the load balancers' addresses or ranges",
    );
  }
  if (config.TRUST_PROXY.includes('none') && config.TRUST_PROXY.length > 1)
    problems.push('TRUST_PROXY: none trusts no proxy, so it stands alone');
  if (config.INGEST_BYTES_IN_WORK < config.INGEST_BODY_LIMIT_BYTES) {
    problems.push('INGEST_BYTES_IN_WORK: must be at least INGEST_BODY_LIMIT_BYTES, or the largest body accepted could never be read');
  }
  // A sender renews its lease right before each request; the request and the writes around it must
  // end inside the lease, or another sender could claim the email mid-request and send it again.
  if (config.SEND_LEASE_SECONDS * 1000 < 2 * config.VA_NOTIFY_TIMEOUT_MS) {
    problems.push('SEND_LEASE_SECONDS: must be at least twice VA_NOTIFY_TIMEOUT_MS, so that a send always ends inside its lease');
  }
  if (config.VA_NOTIFY_BASE_URL !== undefined) {
    if (config.VA_NOTIFY_API_KEY === undefined) problems.push('VA_NOTIFY_API_KEY: required when VA_NOTIFY_BASE_URL is set');
    if (config.VA_NOTIFY_TEMPLATE_ID === undefined) problems.push('VA_NOTIFY_TEMPLATE_ID: required when VA_NOTIFY_BASE_URL is set');
    if (config.VA_NOTIFY_SERVICE_ID === undefined && !isCombinedApiKey(config.VA_NOTIFY_API_KEY)) {
      problems.push('VA_NOTIFY_SERVICE_ID: required when VA_NOTIFY_BASE_URL is set and VA_NOTIFY_API_KEY is a bare secret');
    }
    if (config.VA_NOTIFY_CALLBACK_TOKENS.length === 0 && config.VA_NOTIFY_CALLBACK_URL === undefined) {
      problems.push('VA_NOTIFY_CALLBACK_TOKENS: required when VA_NOTIFY_BASE_URL is set (or set VA_NOTIFY_CALLBACK_URL)');
    }
  } else if (config.NODE_ENV === 'production' && config.DELIVERY_MODE === 'live') {
    problems.push('VA_NOTIFY_BASE_URL: required in production with DELIVERY_MODE=live (the sandbox sends no real email)');
  }
  if (config.AAL_BASE_URL !== undefined) {
    if (config.AAL_APP_TOKEN === undefined) problems.push('AAL_APP_TOKEN: required when AAL_BASE_URL is set');
    if (config.AAL_API_KEY === undefined) problems.push('AAL_API_KEY: required when AAL_BASE_URL is set');
  } else if (config.NODE_ENV === 'production' && config.DELIVERY_MODE === 'live') {
    problems.push('AAL_BASE_URL: required in production with DELIVERY_MODE=live');
  }
  // VA Notify may still call back, and the sweep still poll, until its own retention has passed.
  if (config.RECORD_RETENTION_DAYS > 0 && config.RECORD_RETENTION_DAYS < config.VA_NOTIFY_RETENTION_DAYS) {
    problems.push(
      'RECORD_RETENTION_DAYS: must be 0 (kept forever) or at least VA_NOTIFY_RETENTION_DAYS, so that no history is removed while VA Notify may still report on it',
    );
  }
  if (config.NODE_ENV === 'production' && config.DATABASE_URL === undefined) {
    problems.push('DATABASE_URL: required in production (the embedded PostgreSQL is for development)');
  }
  if (config.EVENT_BUS_BROKERS.length > 0) {
    const bad = config.EVENT_BUS_BROKERS.filter((broker) => !/^[A-Za-z0-9.-]+:\d{1,5}$/.test(broker));
    if (bad.length > 0) problems.push(`EVENT_BUS_BROKERS: not host:port: ${bad.join(', ')}`);
    if (config.EVENT_BUS_SCHEMA_REGISTRY_URL === undefined)
      problems.push('EVENT_BUS_SCHEMA_REGISTRY_URL: required when EVENT_BUS_BROKERS is set');
    if (config.EVENT_BUS_AUTH === 'scram-sha-512') {
      if (config.EVENT_BUS_SCRAM_USERNAME === undefined)
        problems.push('EVENT_BUS_SCRAM_USERNAME: required when EVENT_BUS_AUTH=scram-sha-512');
      if (config.EVENT_BUS_SCRAM_PASSWORD === undefined)
        problems.push('EVENT_BUS_SCRAM_PASSWORD: required when EVENT_BUS_AUTH=scram-sha-512');
    }
    if (config.NODE_ENV === 'production' && config.EVENT_BUS_AUTH === 'none') {
      problems.push('EVENT_BUS_AUTH: none is for a local broker; production uses msk-iam (or scram-sha-512)');
    }
    if (config.NODE_ENV === 'production' && config.EVENT_BUS_TLS === false) problems.push('EVENT_BUS_TLS: must stay on in production');
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
}

/**
 * Why a connection URL cannot be used, in words that never quote it (it holds the password). A
 * reserved character in the password (`#`, `/`, `?`, `@`) ends the password early unless it is
 * percent-encoded, and the rest of the URL is then read as something else.
 */
function databaseUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    url = undefined as unknown as URL;
  }
  const reservedHint =
    'percent-encode reserved characters in the user name and password (# as %23, / as %2F, ? as %3F, @ as %40, % as %25)';
  if (url === undefined || url.hostname === '' || url.hash !== '') return `not a valid URL; ${reservedHint}`;
  if (/^\/[^/]*$/.test(url.pathname) === false) return `the database name holds a "/"; ${reservedHint}`;
  try {
    decodeURIComponent(url.password);
    decodeURIComponent(url.username);
  } catch {
    return `the user name or password holds a "%" that is not percent-encoding; ${reservedHint}`;
  }
  return undefined;
}

/** What Fastify's trustProxy (proxy-addr) takes: an address, an address/prefix, or a named range. */
function isProxyAddress(entry: string): boolean {
  if (['none', 'loopback', 'linklocal', 'uniquelocal'].includes(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128);
}

const CombinedKey = new RegExp(`^.+-(${UuidText})-(${UuidText})$`);

export function isCombinedApiKey(key: string | undefined): boolean {
  return key !== undefined && CombinedKey.test(key);
}

/**
 * VA Notify keys come either as a bare secret or as GOV.UK's combined `{name}-{service_id}-{secret}`;
 * this returns the service id and the secret either way.
 */
export function vaNotifyCredentials(config: Pick<Config, 'VA_NOTIFY_API_KEY' | 'VA_NOTIFY_SERVICE_ID'>): {
  serviceId: string;
  secret: string;
} {
  const key = config.VA_NOTIFY_API_KEY ?? '';
  const combined = CombinedKey.exec(key);
  if (combined) return { serviceId: config.VA_NOTIFY_SERVICE_ID ?? combined[1]!, secret: combined[2]! };
  return { serviceId: config.VA_NOTIFY_SERVICE_ID ?? '', secret: key };
}

/**
 * The secrets that may have signed a per-notification callback: VA Notify signs each with the key
 * that sent the notification, so after a rotation the replaced keys still sign callbacks (retries,
 * and statuses that come days later) for what they sent.
 */
export function vaNotifySigningSecrets(
  config: Pick<Config, 'VA_NOTIFY_API_KEY' | 'VA_NOTIFY_PREVIOUS_API_KEYS' | 'VA_NOTIFY_SERVICE_ID'>,
): string[] {
  return [config.VA_NOTIFY_API_KEY, ...config.VA_NOTIFY_PREVIOUS_API_KEYS]
    .map((key) => vaNotifyCredentials({ VA_NOTIFY_API_KEY: key, VA_NOTIFY_SERVICE_ID: config.VA_NOTIFY_SERVICE_ID }).secret)
    .filter((secret) => secret.length > 0);
}

/** Whether the event-bus consumer speaks TLS to the brokers: on unless set off, or in development. */
export function eventBusTls(config: Pick<Config, 'EVENT_BUS_TLS' | 'NODE_ENV'>): boolean {
  return config.EVENT_BUS_TLS ?? config.NODE_ENV !== 'development';
}

/** A config for tests and tools: the defaults plus the given overrides, validated the same way. */
export function testConfig(overrides: Record<string, string | undefined> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    INTERNAL_API_TOKENS: 'test-internal-token-0001',
    VA_NOTIFY_CALLBACK_TOKENS: 'test-callback-token-0001',
    LOG_LEVEL: 'silent',
    JOBS_ENABLED: 'false',
    ...overrides,
  });
}
