// The VA Notify API as this service uses it: send one email by ICN, read one notification, list
// notifications by our reference. Every answer, thrown error included, becomes one VaNotifyOutcome
// (classifyOutcome), and isRetryable says in one place which of them may be tried again.
//
// The client never logs: callers log outcomes with their own ids. Bodies it returns can carry the
// recipient's email address and identifiers (PII): log fields picked from them, never the bodies.
import { SignJWT } from 'jose';
import { vaNotifyCredentials, type Config } from '../config.ts';

export type VaNotifyOperation = 'send' | 'get' | 'list';

/** The 201 answer to POST /v2/notifications/email. */
export interface SentNotification {
  id: string;
  reference: string | null;
  uri?: string;
  template?: { id: string; version: number; uri: string };
  billing_code?: string | null;
  scheduled_for?: string | null;
  callback_url?: string | null;
  content?: { subject?: string; body?: string };
  [field: string]: unknown;
}

/** A notification as GET /v2/notifications/{id} and the listing return it. */
export interface VaNotifyNotification {
  id: string;
  reference: string | null;
  status: string;
  status_reason?: string | null;
  created_at?: string;
  sent_at?: string | null;
  completed_at?: string | null;
  sent_by?: string | null;
  /** PII: the address VA Profile gave; null until the lookup is done. */
  email_address?: string | null;
  [field: string]: unknown;
}

export interface NotificationListPage {
  notifications: VaNotifyNotification[];
  links?: { current?: string; next?: string };
}

/**
 * What became of one request.
 * - accepted: VA Notify answered 200/201 with the body we expected.
 * - rejected: a 400 (or another 4xx not listed below): the request can never succeed as it is;
 *   `message` is VA Notify's own (errors[0].message), e.g. `Missing personalisation: tracking_info`.
 * - unauthorized: 401/403, our credentials or clock are wrong: a person must act; stop sending.
 * - not_found: 404, unknown id, or a notification that moved to history after the retention days.
 * - rate_limited: 429, the per-minute (RateLimitError) or daily (TooManyRequestsError) limit.
 * - transient: 5xx, 408, timeouts, connection errors, redirects and 2xx bodies we cannot read.
 *   After a send, a transient outcome does not prove the email was not accepted (the answer may be
 *   what was lost): look the reference up before sending again.
 */
export type VaNotifyOutcome<Body = unknown, Id extends string | null = string> =
  | { kind: 'accepted'; status: number; notificationId: Id; body: Body }
  | { kind: 'rejected'; status: number; message: string }
  | { kind: 'unauthorized'; status: 401 | 403; message: string }
  | { kind: 'not_found'; status: 404; message: string }
  /** `daily`: the day's send limit (TooManyRequestsError), not the per-minute rate limit. */
  | { kind: 'rate_limited'; status: 429; message: string; daily: boolean }
  | { kind: 'transient'; status?: number; reason: string };

export type OutcomeKind = VaNotifyOutcome['kind'];
export type SendOutcome = VaNotifyOutcome<SentNotification>;
export type GetOutcome = VaNotifyOutcome<VaNotifyNotification>;
export type ListPageOutcome = VaNotifyOutcome<NotificationListPage, string | null>;
/** All notifications with a reference, newest first; notificationId is the newest one's, or null. */
export type ReferenceOutcome = VaNotifyOutcome<VaNotifyNotification[], string | null>;

/**
 * Whether the same request may be made again later: transient failures and rate limiting (after
 * backing off; VA Notify sends no Retry-After). Never a rejection (it would fail the same way),
 * never an auth failure (a person must fix the key or the clock), never a not_found.
 */
export function isRetryable(outcome: { kind: OutcomeKind }): boolean {
  return outcome.kind === 'transient' || outcome.kind === 'rate_limited';
}

/** One request's raw result: the HTTP answer, or the error fetch threw. */
export type HttpResult = { status: number; text: string } | { error: unknown; timeoutMs?: number };

const MaxMessageLength = 500;

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** VA Notify's message from either error shape: v2 `errors[0].message`, or the 500 shape's `message`. */
function errorMessage(body: unknown): string | undefined {
  if (!isObject(body)) return undefined;
  const errors = body.errors;
  if (Array.isArray(errors) && isObject(errors[0]) && typeof errors[0].message === 'string') return errors[0].message;
  if (typeof body.message === 'string') return body.message;
  return undefined;
}

/** The v2 error body's error class, e.g. `RateLimitError` or `TooManyRequestsError`. */
function errorName(body: unknown): string | undefined {
  if (!isObject(body) || !Array.isArray(body.errors) || !isObject(body.errors[0])) return undefined;
  return typeof body.errors[0].error === 'string' ? body.errors[0].error : undefined;
}

function clip(text: string): string {
  return text.length > MaxMessageLength ? `${text.slice(0, MaxMessageLength)}…` : text;
}

function describeError(result: { error: unknown; timeoutMs?: number }): string {
  const error = result.error as { name?: string; message?: string; cause?: { code?: string; name?: string } } | undefined;
  if (error?.name === 'TimeoutError') {
    return result.timeoutMs === undefined ? 'timeout' : `timeout after ${result.timeoutMs} ms`;
  }
  if (error?.name === 'AbortError') return 'request aborted';
  const code = error?.cause?.code ?? error?.cause?.name;
  if (code) return `connection error (${code})`;
  return `request failed (${error?.name ?? 'unknown error'}: ${clip(error?.message ?? '')})`;
}

function acceptedBody(operation: VaNotifyOperation, body: unknown): boolean {
  if (!isObject(body)) return false;
  if (operation === 'list')
    return Array.isArray(body.notifications) && body.notifications.every((n) => isObject(n) && typeof n.id === 'string');
  if (typeof body.id !== 'string' || body.id.length === 0) return false;
  return operation === 'send' || typeof body.status === 'string';
}

function newestId(notifications: VaNotifyNotification[]): string | null {
  let newest: VaNotifyNotification | undefined;
  for (const n of notifications) {
    if (newest === undefined || (n.created_at ?? '') > (newest.created_at ?? '')) newest = n;
  }
  return newest?.id ?? null;
}

/** Turns one request's result into the outcome callers branch on. */
export function classifyOutcome(operation: 'send', result: HttpResult): SendOutcome;
export function classifyOutcome(operation: 'get', result: HttpResult): GetOutcome;
export function classifyOutcome(operation: 'list', result: HttpResult): ListPageOutcome;
export function classifyOutcome(operation: VaNotifyOperation, result: HttpResult): VaNotifyOutcome<unknown, string | null>;
export function classifyOutcome(operation: VaNotifyOperation, result: HttpResult): VaNotifyOutcome<unknown, string | null> {
  if ('error' in result) return { kind: 'transient', reason: describeError(result) };
  const { status } = result;
  const body = parseJson(result.text);
  const vaMessage = errorMessage(body);
  const message = clip(vaMessage ?? `HTTP ${status}`);

  if (status === 200 || status === 201) {
    if (!acceptedBody(operation, body)) return { kind: 'transient', status, reason: `HTTP ${status} with an unreadable body` };
    const record = body as Record<string, unknown>;
    const notificationId = operation === 'list' ? newestId(record.notifications as VaNotifyNotification[]) : (record.id as string);
    return { kind: 'accepted', status, notificationId, body };
  }
  if (status === 401 || status === 403) return { kind: 'unauthorized', status, message };
  if (status === 404) return { kind: 'not_found', status, message };
  if (status === 429) return { kind: 'rate_limited', status, message, daily: errorName(body) === 'TooManyRequestsError' };
  // A gateway's 408 means the request did not get through in time: like a timeout.
  if (status === 408 || status >= 500)
    return { kind: 'transient', status, reason: vaMessage === undefined ? `HTTP ${status}` : `HTTP ${status}: ${message}` };
  if (status >= 400) return { kind: 'rejected', status, message };
  // Other 2xx and 3xx: not an answer VA Notify gives; most likely a misconfigured base URL. Kept
  // retryable so it fails the email only after the bounded attempts, not at the first request.
  return { kind: 'transient', status, reason: `unexpected HTTP ${status}` };
}

export interface VaNotifyClientOptions {
  /** e.g. https://api.notifications.va.gov; a path prefix (https://api.va.gov/vanotify) is kept. */
  baseUrl: string;
  serviceId: string;
  secret: string;
  templateId: string;
  billingCode?: string;
  /** Per-notification callback URL (mechanism B); unset uses the service-level callback. */
  callbackUrl?: string;
  timeoutMs: number;
  /** Called once per HTTP request with its outcome kind and duration, e.g. for metrics. */
  onRequest?: (operation: VaNotifyOperation, outcome: string, seconds: number) => void;
}

export interface SendEmailInput {
  icn: string;
  /** Our own reference (the tracking email's id): how a lost answer is found again. */
  reference: string;
  personalisation: Record<string, unknown>;
}

export interface VaNotifyClient {
  sendEmail(input: SendEmailInput): Promise<SendOutcome>;
  getNotification(id: string): Promise<GetOutcome>;
  findByReference(reference: string): Promise<ReferenceOutcome>;
}

/** Pages followed at most when listing by reference: one reference has one or a few notifications. */
const MaxListPages = 20;

export function createVaNotifyClient(options: VaNotifyClientOptions): VaNotifyClient {
  const { serviceId, secret, templateId, timeoutMs, onRequest } = options;
  if (!serviceId) throw new Error('VA Notify client: service id is missing');
  if (!secret) throw new Error('VA Notify client: API key secret is missing');
  if (!templateId) throw new Error('VA Notify client: template id is missing');
  const base = options.baseUrl.replace(/\/+$/, '');
  const key = new TextEncoder().encode(secret);

  // VA Notify accepts a token only within 30 s of its clock, so each request gets a fresh one.
  function token(): Promise<string> {
    return new SignJWT({}).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuer(serviceId).setIssuedAt().sign(key);
  }

  async function request<O extends { kind: OutcomeKind }>(
    operation: VaNotifyOperation,
    url: URL,
    init: { method: 'GET' | 'POST'; body?: string },
    classify: (result: HttpResult) => O,
  ): Promise<O> {
    const started = performance.now();
    let result: HttpResult;
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${await token()}`, accept: 'application/json' };
      if (init.body !== undefined) headers['content-type'] = 'application/json';
      const response = await fetch(url, {
        method: init.method,
        headers,
        body: init.body,
        // A redirect would turn a POST into a GET elsewhere: treat it as an answer instead.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
      result = { status: response.status, text: await response.text() };
    } catch (error) {
      result = { error, timeoutMs };
    }
    const outcome = classify(result);
    onRequest?.(operation, outcome.kind, (performance.now() - started) / 1000);
    return outcome;
  }

  return {
    async sendEmail(input) {
      // Exactly the properties VA Notify allows; any other key is a 400 there.
      const body: Record<string, unknown> = {
        template_id: templateId,
        recipient_identifier: { id_type: 'ICN', id_value: input.icn },
        personalisation: input.personalisation,
        reference: input.reference,
      };
      if (options.billingCode !== undefined) body.billing_code = options.billingCode;
      if (options.callbackUrl !== undefined) body.callback_url = options.callbackUrl;
      const url = new URL(`${base}/v2/notifications/email`);
      return request('send', url, { method: 'POST', body: JSON.stringify(body) }, (r) => classifyOutcome('send', r));
    },

    async getNotification(id) {
      const url = new URL(`${base}/v2/notifications/${encodeURIComponent(id)}`);
      return request('get', url, { method: 'GET' }, (r) => classifyOutcome('get', r));
    },

    async findByReference(reference) {
      const notifications: VaNotifyNotification[] = [];
      const seen = new Set<string>();
      const url = new URL(`${base}/v2/notifications`);
      url.searchParams.set('reference', reference);
      for (let page = 0; page < MaxListPages; page++) {
        const outcome = await request('list', url, { method: 'GET' }, (r) => classifyOutcome('list', r));
        if (outcome.kind !== 'accepted') return outcome;
        notifications.push(...outcome.body.notifications);
        const next = outcome.body.links?.next;
        if (!next || outcome.body.notifications.length === 0) break;
        // The next link may name VA Notify's internal host; keep our base URL and take its query
        // (reference and older_than), which is what pages the listing.
        const nextQuery = new URL(next, url).search;
        if (seen.has(nextQuery) || nextQuery === url.search) break;
        seen.add(nextQuery);
        url.search = nextQuery;
      }
      return { kind: 'accepted', status: 200, notificationId: newestId(notifications), body: notifications };
    },
  };
}

/**
 * The client as the configuration describes it. `baseUrl` is VA_NOTIFY_BASE_URL or the sandbox's
 * address. `overrides` replace configured values: in sandbox mode the configuration has no
 * credentials, and the sandbox's are passed here.
 */
export function vaNotifyClientFromConfig(
  config: Config,
  baseUrl: string,
  overrides: Partial<Omit<VaNotifyClientOptions, 'baseUrl'>> = {},
): VaNotifyClient {
  const credentials = vaNotifyCredentials(config);
  const options: VaNotifyClientOptions = {
    baseUrl,
    serviceId: credentials.serviceId,
    secret: credentials.secret,
    templateId: config.VA_NOTIFY_TEMPLATE_ID ?? '',
    timeoutMs: config.VA_NOTIFY_TIMEOUT_MS,
    ...(config.VA_NOTIFY_BILLING_CODE !== undefined ? { billingCode: config.VA_NOTIFY_BILLING_CODE } : {}),
    ...(config.VA_NOTIFY_CALLBACK_URL !== undefined ? { callbackUrl: config.VA_NOTIFY_CALLBACK_URL } : {}),
  };
  for (const [name, value] of Object.entries(overrides)) {
    if (value !== undefined && value !== '') (options as unknown as Record<string, unknown>)[name] = value;
  }
  return createVaNotifyClient(options);
}
