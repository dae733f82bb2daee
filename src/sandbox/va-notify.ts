// A sandbox VA Notify: a real HTTP server on loopback that follows the contract in
// reference/va-notify.md (JWT auth, the email request schema, the per-minute limit, GET by id and by
// reference, delivery-status callbacks with both mechanisms). The service runs against it when it
// has no VA Notify credentials, and tests use it as VA Notify. It sends no email.
//
// Deterministic outcomes by recipient ICN (sandboxOutcomeFor, or state.outcomeOverrides), so tests
// and local runs can pick one:
//   ICN ending 000001  → permanent-failure, "Undeliverable - Preferences declined in VA Profile"
//   ICN ending 000002  → temporary-failure, "Retryable - Notification is unable to be processed at
//                        this time. Replay the request to VA Notify."
//   ICN ending 000003  → stays `sending` forever (never completes: for polling tests)
//   any other ICN      → delivered
// A notification sent to a raw email address is delivered. The stored status moves after
// `callbackDelayMs` whether or not a callback is posted (or dropped by a fault knob), so GET
// always shows what VA Notify would.
//
// Where the contract is silent, the sandbox does what GOV.UK Notify's code does: only POSTs to the
// email endpoint count against the rate limit; GET /v2/notifications answers a `next` link whenever
// a page is not empty (older_than = the page's last id); error messages use its wording.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import type { Logger } from 'pino';
import { DevelopmentSecrets } from '../config.ts';
import { isUuid } from '../http/schemas.ts';
import { enpSignature } from '../callbacks/signature.ts';

/** Credentials the sandbox accepts unless told otherwise; the service uses them in sandbox mode. */
export const SandboxDefaults = {
  serviceId: '5a1d0c5e-0000-4000-8000-5a4db0c00001',
  secret: '5a1d0c5e-0000-4000-8000-5ec7e7000001',
  templateId: '5a1d0c5e-0000-4000-8000-7e3d1a7e0001',
  callbackToken: DevelopmentSecrets.VA_NOTIFY_CALLBACK_TOKENS,
} as const;

/** The address VA Profile "has" for every veteran in the sandbox (the callback's `to`). */
export const SandboxRecipientEmail = 'veteran.sandbox@example.com';

export const DefaultRequiredPersonalisation = ['tracking_info', 'package_count', 'prescription_count', 'shipped_date'] as const;

export type SandboxStatus = 'delivered' | 'permanent-failure' | 'temporary-failure' | 'sending';

export const PreferencesDeclinedReason = 'Undeliverable - Preferences declined in VA Profile';
export const RetryableReason = 'Retryable - Notification is unable to be processed at this time. Replay the request to VA Notify.';

/** Where a notification to this ICN ends up in the sandbox (see the rule at the top of the file). */
export function sandboxOutcomeFor(icn: string): { status: SandboxStatus; statusReason: string | null } {
  if (icn.endsWith('000001')) return { status: 'permanent-failure', statusReason: PreferencesDeclinedReason };
  if (icn.endsWith('000002')) return { status: 'temporary-failure', statusReason: RetryableReason };
  if (icn.endsWith('000003')) return { status: 'sending', statusReason: null };
  return { status: 'delivered', statusReason: null };
}

/**
 * The next answer to POST /v2/notifications/email, taken from the queue ahead of everything else
 * (authentication and the rate limit included; a forced answer does not count against the limit).
 */
export type ForcedResponse =
  /** 4xx: the v2 error body with `error` and `message` (defaults per status); 5xx: the 500-shape body. */
  | { status: number; message?: string; error?: string }
  /** Never answer: the client's timeout fires. */
  | { hang: true }
  /** Process normally (store, 201 body, callbacks follow) but cut the connection instead of
   *  answering: VA Notify accepted the email and the caller never learned its id. */
  | { acceptThenDrop: true }
  /** Process normally, but answer 201 with a body that is not JSON (a proxy's page, a truncated
   *  answer): VA Notify accepted the email and the caller cannot read its id. */
  | { acceptWithUnreadableBody: true };

export interface SandboxFaults {
  /** Share of callbacks not posted at all (the status still moves). */
  dropCallbackRate: number;
  /** Share of callbacks posted twice. */
  duplicateCallbackRate: number;
  /** Post a stale `sending` callback after the final one. */
  reorderCallbacks: boolean;
  /** Share of sends answered 503 with the 500-shape body. */
  sendFailureRate: number;
  /** Delay before answering any request. */
  latencyMs: number;
}

export interface StoredNotification {
  id: string;
  reference: string | null;
  /** The request body exactly as received. */
  request: Record<string, unknown>;
  recipientIdentifier: { id_type: string; id_value: string } | null;
  /** Filled when the (simulated) VA Profile lookup is done, at `sending`. */
  emailAddress: string | null;
  status: string;
  statusReason: string | null;
  createdAt: string;
  sentAt: string | null;
  completedAt: string | null;
  callbackUrl: string | null;
  billingCode: string | null;
  /** The verified JWT of the send request. */
  token: { header: ProtectedHeaderParameters; claims: JWTPayload };
}

export interface CallbackAttempt {
  notificationId: string;
  status: string;
  /** service: the service-level callback (bearer token); notification: the request's callback_url (signature). */
  mechanism: 'service' | 'notification';
  url: string;
  body: Record<string, unknown>;
  headers: Record<string, string>;
  /** A stale `sending` posted after the final status (reorderCallbacks). */
  stale: boolean;
  attempt: number;
  responseStatus: number | null;
  error: string | null;
}

export interface SandboxCounters {
  sendsAccepted: number;
  /** Answers other than 201 to POST /v2/notifications/email, by HTTP status. */
  sendsRejected: Record<number, number>;
  sendsHung: number;
  getsById: number;
  getsByReference: number;
  /** Callback POST requests made, retries and duplicates included. */
  callbacksPosted: number;
  /** Callbacks not posted because of dropCallbackRate. */
  callbacksDropped: number;
  /** Callbacks given up: a 4xx answer, or retries exhausted. */
  callbacksFailed: number;
}

export interface SandboxState {
  faults: SandboxFaults;
  forcedResponses: ForcedResponse[];
  notifications: Map<string, StoredNotification>;
  counters: SandboxCounters;
  /** Every callback POST attempt, in the order made. */
  callbacks: CallbackAttempt[];
  /** Outcomes by ICN that replace sandboxOutcomeFor for notifications sent from then on. */
  outcomeOverrides: Map<string, { status: SandboxStatus; statusReason: string | null }>;
}

export interface SandboxVaNotifyOptions {
  serviceId?: string;
  secret?: string;
  templateId?: string;
  /** Bearer token of the service-level callback (mechanism A). */
  callbackToken?: string;
  /** Service-level callback URL; also settable later with setCallbackUrl. */
  callbackUrl?: string | null;
  rateLimitPerMinute?: number;
  callbackDelayMs?: number;
  /** Service-level callbacks: only completed statuses (VA Notify's default), or `sending` too. */
  callbackStatuses?: 'final' | 'all';
  requiredPersonalisation?: readonly string[];
  /** Notifications per page of GET /v2/notifications (VA Notify: 250). */
  pageSize?: number;
  callbackMaxAttempts?: number;
  /** First callback retry delay; doubles per attempt (VA Notify: up to 300 s, here short). */
  callbackRetryDelayMs?: number;
  callbackTimeoutMs?: number;
  faults?: Partial<SandboxFaults>;
  /** Source of randomness for the fault rates. */
  random?: () => number;
  log?: Logger;
  host?: string;
  port?: number;
}

export interface SandboxVaNotify {
  url: string;
  state: SandboxState;
  setCallbackUrl(url: string | null): void;
  /** Resolves once no status change or callback is pending (hung requests aside). */
  whenIdle(): Promise<void>;
  close(): Promise<void>;
}

const IdTypes = ['VAPROFILEID', 'PID', 'ICN', 'BIRLSID', 'EDIPI'] as const;
const AllowedProperties = [
  'template_id',
  'email_address',
  'recipient_identifier',
  'personalisation',
  'reference',
  'billing_code',
  'callback_url',
  'scheduled_for',
];
const SimulatedAddresses = new Set([
  'simulate-delivered@notifications.va.gov',
  'simulate-delivered-2@notifications.va.gov',
  'simulate-delivered-3@notifications.va.gov',
]);
const ListQueryParameters = new Set(['reference', 'older_than', 'status', 'template_type', 'include_jobs']);
const MaxBodyBytes = 1024 * 1024;
const ClockSkewSeconds = 30;
const EmailPattern = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

const TemplateSubject = 'Your VA prescription shipment';
const TemplateBody =
  'Your VA prescriptions have shipped.\n\n((package_count)) package(s) with ((prescription_count)) prescription(s) shipped on ((shipped_date)).\n\n((tracking_info))';

const DefaultErrorMessages: Record<number, { error: string; message: string }> = {
  400: { error: 'BadRequestError', message: 'Bad request' },
  401: { error: 'AuthError', message: 'Unauthorized: authentication token must be provided' },
  403: { error: 'AuthError', message: 'Invalid token: signature, api token not found' },
  404: { error: 'NoResultFound', message: 'No result found' },
  429: { error: 'RateLimitError', message: 'Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds' },
};

class HttpAnswer {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body: unknown) {
    this.status = status;
    this.body = body;
  }
}

function v2Error(status: number, error: string, ...messages: string[]): HttpAnswer {
  return new HttpAnswer(status, { status_code: status, errors: messages.map((message) => ({ error, message })) });
}

const internalError = (status = 500) => new HttpAnswer(status, { result: 'error', message: 'Internal server error' });

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function unexpected(keys: string[]): string {
  return `Additional properties are not allowed (${keys.join(', ')} ${keys.length === 1 ? 'was' : 'were'} unexpected)`;
}

/**
 * The request schema. Messages name the field, never its value: a value may be an identifier.
 * callback_url must be https, except on loopback, where the sandbox's own callers listen.
 */
function schemaErrors(body: unknown): string[] {
  if (!isObject(body)) return ['body is not of type object'];
  const errors: string[] = [];
  const extra = Object.keys(body).filter((key) => !AllowedProperties.includes(key));
  if (extra.length > 0) errors.push(unexpected(extra));

  if (!('template_id' in body)) errors.push('template_id is a required property');
  else if (typeof body.template_id !== 'string' || !isUuid(body.template_id)) errors.push('template_id is not a valid UUID');

  if (!('email_address' in body) && !('recipient_identifier' in body)) {
    errors.push('Please provide either a recipient_identifier or an email_address');
  }
  if ('email_address' in body && (typeof body.email_address !== 'string' || !EmailPattern.test(body.email_address))) {
    errors.push('email_address Not a valid email address');
  }
  if ('recipient_identifier' in body) errors.push(...recipientErrors(body.recipient_identifier));
  if ('personalisation' in body && !isObject(body.personalisation)) errors.push('personalisation is not of type object');
  if ('reference' in body && typeof body.reference !== 'string') errors.push('reference is not of type string');
  if ('billing_code' in body && body.billing_code !== null) {
    if (typeof body.billing_code !== 'string') errors.push('billing_code is not of type string, null');
    else if (body.billing_code.length > 256) errors.push('billing_code is too long');
  }
  if ('callback_url' in body && body.callback_url !== null) {
    if (typeof body.callback_url !== 'string') errors.push('callback_url is not of type string, null');
    else if (body.callback_url.length > 255) errors.push('callback_url is too long');
    else if (!isAcceptedCallbackUrl(body.callback_url)) errors.push('callback_url is not a valid https url');
  }
  if ('scheduled_for' in body && body.scheduled_for !== null && typeof body.scheduled_for !== 'string') {
    errors.push('scheduled_for is not of type string, null');
  }
  return errors;
}

function recipientErrors(recipient: unknown): string[] {
  if (!isObject(recipient)) return ['recipient_identifier is not of type object'];
  const errors: string[] = [];
  const extraKeys = Object.keys(recipient).filter((key) => key !== 'id_type' && key !== 'id_value');
  if (extraKeys.length > 0) errors.push(`recipient_identifier ${unexpected(extraKeys)}`);
  if (!('id_type' in recipient)) errors.push('recipient_identifier id_type is a required property');
  else if (!(IdTypes as readonly unknown[]).includes(recipient.id_type)) {
    errors.push(`recipient_identifier id_type is not one of [${IdTypes.join(', ')}]`);
  }
  if (!('id_value' in recipient)) errors.push('recipient_identifier id_value is a required property');
  else if (typeof recipient.id_value !== 'string' || recipient.id_value.length === 0) {
    errors.push('recipient_identifier id_value is not a non-empty string');
  }
  return errors;
}

function isAcceptedCallbackUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

/** Monotonic `YYYY-MM-DDTHH:MM:SS.ffffffZ` stamps, so each status change is strictly later. */
function microsecondClock(): () => string {
  let last = 0n;
  return () => {
    let now = BigInt(Date.now()) * 1000n;
    if (now <= last) now = last + 1n;
    last = now;
    const seconds = new Date(Number(now / 1000n)).toISOString().slice(0, 19);
    return `${seconds}.${(now % 1_000_000n).toString().padStart(6, '0')}Z`;
  };
}

async function readBody(req: IncomingMessage): Promise<{ text: string; tooLarge: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= MaxBodyBytes) chunks.push(chunk);
  }
  return { text: Buffer.concat(chunks).toString('utf8'), tooLarge: size > MaxBodyBytes };
}

/** The options with their defaults filled in: what a running sandbox consults. */
interface Settings {
  serviceId: string;
  templateId: string;
  /** Signs the per-notification callbacks (x-enp-signature). */
  secret: string;
  /** The send JWT's HS256 key: the secret's bytes. */
  key: Uint8Array;
  callbackToken: string;
  rateLimit: number;
  callbackDelayMs: number;
  callbackStatuses: 'final' | 'all';
  requiredPersonalisation: readonly string[];
  pageSize: number;
  callbackMaxAttempts: number;
  callbackRetryDelayMs: number;
  callbackTimeoutMs: number;
  random: () => number;
  log: Logger | undefined;
}

/** One running sandbox: its settings, the state tests read, and what only the sandbox uses. */
interface Sandbox {
  settings: Settings;
  state: SandboxState;
  stamp: () => string;
  closing: AbortController;
  /** Status changes and callbacks not yet settled. */
  pending: Set<Promise<unknown>>;
  /** Creation order, for listings newest first. */
  order: string[];
  /** Send request times within the last minute: the sliding window. */
  window: number[];
  url: string;
  serviceCallbackUrl: string | null;
}

type Auth = { header: ProtectedHeaderParameters; claims: JWTPayload };

function settingsFrom(options: SandboxVaNotifyOptions): Settings {
  const secret = options.secret ?? SandboxDefaults.secret;
  return {
    serviceId: options.serviceId ?? SandboxDefaults.serviceId,
    templateId: options.templateId ?? SandboxDefaults.templateId,
    secret,
    key: new TextEncoder().encode(secret),
    callbackToken: options.callbackToken ?? SandboxDefaults.callbackToken,
    rateLimit: options.rateLimitPerMinute ?? 3000,
    callbackDelayMs: options.callbackDelayMs ?? 1000,
    callbackStatuses: options.callbackStatuses ?? 'final',
    requiredPersonalisation: options.requiredPersonalisation ?? DefaultRequiredPersonalisation,
    pageSize: options.pageSize ?? 250,
    callbackMaxAttempts: options.callbackMaxAttempts ?? 5,
    callbackRetryDelayMs: options.callbackRetryDelayMs ?? 50,
    callbackTimeoutMs: options.callbackTimeoutMs ?? 5000,
    random: options.random ?? Math.random,
    log: options.log,
  };
}

function initialState(faults: Partial<SandboxFaults> | undefined): SandboxState {
  return {
    faults: { dropCallbackRate: 0, duplicateCallbackRate: 0, reorderCallbacks: false, sendFailureRate: 0, latencyMs: 0, ...faults },
    forcedResponses: [],
    notifications: new Map(),
    counters: {
      sendsAccepted: 0,
      sendsRejected: {},
      sendsHung: 0,
      getsById: 0,
      getsByReference: 0,
      callbacksPosted: 0,
      callbacksDropped: 0,
      callbacksFailed: 0,
    },
    callbacks: [],
    outcomeOverrides: new Map(),
  };
}

function track(sandbox: Sandbox, work: Promise<unknown>): void {
  const settled = work.catch((error: unknown) => {
    if (!sandbox.closing.signal.aborted) sandbox.settings.log?.error({ err: error }, 'sandbox VA Notify: background work failed');
  });
  sandbox.pending.add(settled);
  void settled.finally(() => sandbox.pending.delete(settled));
}

// ---- authentication and the rate limit ----

/** GOV.UK Notify's checks, in its order: header, issuer, signature, then the clock. */
async function authenticate(settings: Settings, req: IncomingMessage): Promise<Auth | HttpAnswer> {
  const header = req.headers.authorization;
  if (!header) return v2Error(401, 'AuthError', 'Unauthorized: authentication token must be provided');
  const [scheme, token, ...rest] = header.trim().split(/\s+/);
  if (scheme?.toLowerCase() !== 'bearer' || !token || rest.length > 0) {
    return v2Error(401, 'AuthError', 'Unauthorized: authentication bearer scheme must be used');
  }
  let claims: JWTPayload;
  try {
    claims = decodeJwt(token);
  } catch {
    return v2Error(403, 'AuthError', 'Invalid token: signature, api token not found');
  }
  if (claims.iss === undefined) return v2Error(403, 'AuthError', 'Invalid token: iss field not provided');
  if (!isUuid(claims.iss)) return v2Error(403, 'AuthError', 'Invalid token: service id is not the right data type');
  if (claims.iss.toLowerCase() !== settings.serviceId.toLowerCase()) return v2Error(403, 'AuthError', 'Invalid token: service not found');
  const refused = await signatureAndClock(settings, token, claims);
  if (refused !== null) return refused;
  return { header: decodeProtectedHeader(token) as ProtectedHeaderParameters, claims };
}

async function signatureAndClock(settings: Settings, token: string, claims: JWTPayload): Promise<HttpAnswer | null> {
  try {
    await jwtVerify(token, settings.key, { algorithms: ['HS256'] });
  } catch (error) {
    if (error instanceof joseErrors.JWTClaimValidationFailed || error instanceof joseErrors.JWTExpired) {
      return v2Error(403, 'AuthError', 'Error: Your system clock must be accurate to within 30 seconds');
    }
    return v2Error(403, 'AuthError', 'Invalid token: signature, api token not found');
  }
  if (typeof claims.iat !== 'number') return v2Error(403, 'AuthError', 'Invalid token: iat field not provided');
  if (Math.abs(Date.now() / 1000 - claims.iat) > ClockSkewSeconds) {
    return v2Error(403, 'AuthError', 'Error: Your system clock must be accurate to within 30 seconds');
  }
  return null;
}

/** The sliding 60 s window; a request refused by the limit still counts, as in VA Notify. */
function overRateLimit(sandbox: Sandbox): boolean {
  const now = Date.now();
  sandbox.window = sandbox.window.filter((at) => at > now - 60_000);
  sandbox.window.push(now);
  return sandbox.window.length > sandbox.settings.rateLimit;
}

function rateLimitMessage(settings: Settings): string {
  return `Exceeded rate limit for key type LIVE of ${settings.rateLimit} requests per 60 seconds`;
}

function forcedAnswer(settings: Settings, forced: { status: number; message?: string; error?: string }): HttpAnswer {
  if (forced.status >= 500) return internalError(forced.status);
  const defaults = DefaultErrorMessages[forced.status] ?? { error: 'BadRequestError', message: `HTTP ${forced.status}` };
  const message = forced.message ?? (forced.status === 429 ? rateLimitMessage(settings) : defaults.message);
  return v2Error(forced.status, forced.error ?? defaults.error, message);
}

// ---- sends ----

function templateUri(sandbox: Sandbox): string {
  return `${sandbox.url}/services/${sandbox.settings.serviceId}/templates/${sandbox.settings.templateId}`;
}

function redactedBody(): string {
  return TemplateBody.replace(/\(\([^)]+\)\)/g, '<redacted>');
}

/** The checks of POST /v2/notifications/email up to a valid request: a refusal, or the request. */
async function checkSend(
  sandbox: Sandbox,
  req: IncomingMessage,
  text: string,
  tooLarge: boolean,
): Promise<HttpAnswer | { request: Record<string, unknown>; auth: Auth }> {
  const { settings, state } = sandbox;
  const auth = await authenticate(settings, req);
  if (auth instanceof HttpAnswer) return auth;
  if (overRateLimit(sandbox)) return v2Error(429, 'RateLimitError', rateLimitMessage(settings));
  if (settings.random() < state.faults.sendFailureRate) return internalError(503);
  if (tooLarge) return v2Error(413, 'ValidationError', 'Request body is larger than 1 MiB');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return v2Error(400, 'BadRequestError', 'Invalid JSON supplied in POST data');
  }
  const errors = schemaErrors(body);
  if (errors.length > 0) return v2Error(400, 'ValidationError', ...errors);
  const request = body as Record<string, unknown>;
  const refused = requestRefusal(settings, request);
  return refused ?? { request, auth };
}

/** What VA Notify refuses in a request the schema allows: another template, a schedule, missing personalisation. */
function requestRefusal(settings: Settings, request: Record<string, unknown>): HttpAnswer | null {
  if (String(request.template_id).toLowerCase() !== settings.templateId.toLowerCase())
    return v2Error(400, 'BadRequestError', 'Template not found');
  if (request.scheduled_for !== undefined && request.scheduled_for !== null) {
    return v2Error(400, 'BadRequestError', 'Cannot schedule notifications (this feature is invite-only)');
  }
  const personalisation = (request.personalisation ?? {}) as Record<string, unknown>;
  const missing = settings.requiredPersonalisation.filter((name) => !(name in personalisation));
  if (missing.length > 0) return v2Error(400, 'BadRequestError', `Missing personalisation: ${missing.join(', ')}`);
  return null;
}

/** The body of POST /v2/notifications/email: an answer, or the notification to store. */
async function acceptSend(
  sandbox: Sandbox,
  req: IncomingMessage,
  text: string,
  tooLarge: boolean,
): Promise<HttpAnswer | { notification: StoredNotification | null; answer: HttpAnswer }> {
  const checked = await checkSend(sandbox, req, text, tooLarge);
  if (checked instanceof HttpAnswer) return checked;
  const { request, auth } = checked;
  const notification = newNotification(sandbox, request, auth);
  const answer = new HttpAnswer(201, {
    id: notification.id,
    reference: notification.reference,
    uri: `${sandbox.url}/v2/notifications/${notification.id}`,
    template: { id: sandbox.settings.templateId, version: 1, uri: templateUri(sandbox) },
    billing_code: notification.billingCode,
    scheduled_for: null,
    callback_url: notification.callbackUrl,
    content: { subject: TemplateSubject, body: redactedBody() },
  });
  // VA Notify's simulated recipients: accepted, but nothing is stored or sent.
  const simulated = notification.emailAddress !== null && SimulatedAddresses.has(notification.emailAddress.toLowerCase());
  return { notification: simulated ? null : notification, answer };
}

function newNotification(sandbox: Sandbox, request: Record<string, unknown>, auth: Auth): StoredNotification {
  const recipient = isObject(request.recipient_identifier)
    ? { id_type: String(request.recipient_identifier.id_type), id_value: String(request.recipient_identifier.id_value) }
    : null;
  return {
    id: randomUUID(),
    reference: typeof request.reference === 'string' ? request.reference : null,
    request,
    recipientIdentifier: recipient,
    emailAddress: typeof request.email_address === 'string' ? request.email_address : null,
    status: 'created',
    statusReason: null,
    createdAt: sandbox.stamp(),
    sentAt: null,
    completedAt: null,
    callbackUrl: typeof request.callback_url === 'string' ? request.callback_url : null,
    billingCode: typeof request.billing_code === 'string' ? request.billing_code : null,
    token: auth,
  };
}

// ---- reads ----

function notificationView(sandbox: Sandbox, n: StoredNotification): Record<string, unknown> {
  return {
    id: n.id,
    reference: n.reference,
    email_address: n.emailAddress,
    phone_number: null,
    type: 'email',
    status: n.status,
    status_reason: n.statusReason,
    template: { id: sandbox.settings.templateId, version: 1, uri: templateUri(sandbox) },
    subject: TemplateSubject,
    body: redactedBody(),
    created_at: n.createdAt,
    created_by_name: null,
    sent_at: n.sentAt,
    sent_by: n.sentAt === null ? null : 'ses',
    completed_at: n.completedAt,
    scheduled_for: null,
    billing_code: n.billingCode,
    callback_url: n.callbackUrl,
    recipient_identifiers: n.recipientIdentifier === null ? [] : [n.recipientIdentifier],
  };
}

function listNotifications(sandbox: Sandbox, query: URLSearchParams): HttpAnswer {
  const unknown = [...new Set(query.keys())].filter((name) => !ListQueryParameters.has(name));
  if (unknown.length > 0) return v2Error(400, 'ValidationError', unexpected(unknown));
  const page = listingPage(sandbox, query);
  const current = new URL(`${sandbox.url}/v2/notifications`);
  current.search = query.toString();
  const links: Record<string, string> = { current: current.toString() };
  if (page.length > 0) {
    const next = new URL(current);
    next.searchParams.set('older_than', page.at(-1)!.id);
    links.next = next.toString();
  }
  return new HttpAnswer(200, { notifications: page.map((n) => notificationView(sandbox, n)), links });
}

/** Newest first, after `older_than`, filtered by the query, one page long. */
function listingPage(sandbox: Sandbox, query: URLSearchParams): StoredNotification[] {
  const reference = query.get('reference');
  const statuses = query.getAll('status');
  const types = query.getAll('template_type');
  let candidates = [...sandbox.order].reverse().map((id) => sandbox.state.notifications.get(id)!);
  const olderThan = query.get('older_than');
  if (olderThan !== null) {
    const index = candidates.findIndex((n) => n.id === olderThan);
    candidates = index === -1 ? [] : candidates.slice(index + 1);
  }
  return candidates
    .filter((n) => reference === null || n.reference === reference)
    .filter((n) => statuses.length === 0 || statuses.includes(n.status))
    .filter(() => types.length === 0 || types.includes('email'))
    .slice(0, sandbox.settings.pageSize);
}

// ---- status changes and callbacks ----

interface Callback {
  notificationId: string;
  mechanism: CallbackAttempt['mechanism'];
  url: string | null;
  body: Record<string, unknown>;
  stale: boolean;
}

function callbackBody(n: StoredNotification, mechanism: CallbackAttempt['mechanism']): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: n.id,
    reference: n.reference,
    to: n.emailAddress,
    status: n.status,
    created_at: n.createdAt,
    completed_at: n.completedAt,
    sent_at: n.sentAt,
    notification_type: 'email',
    status_reason: n.statusReason,
    provider: n.sentAt === null ? null : 'ses',
  };
  if (mechanism === 'notification') body.provider_payload = null;
  return body;
}

function callbackHeaders(settings: Settings, callback: Callback): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (callback.mechanism === 'service') headers.authorization = `Bearer ${settings.callbackToken}`;
  else headers['x-enp-signature'] = enpSignature(callback.body, settings.secret);
  return headers;
}

/** One callback with VA Notify's retry rule: again on a connection error, timeout or ≥ 500 (and
 *  429 for per-notification callbacks); any other answer ends it. */
async function post(sandbox: Sandbox, callback: Callback, target: string): Promise<void> {
  const { settings, closing } = sandbox;
  const headers = callbackHeaders(settings, callback);
  for (let attempt = 1; attempt <= settings.callbackMaxAttempts; attempt++) {
    if (closing.signal.aborted) return;
    const record: CallbackAttempt = {
      notificationId: callback.notificationId,
      status: String(callback.body.status),
      mechanism: callback.mechanism,
      url: target,
      body: callback.body,
      headers,
      stale: callback.stale,
      attempt,
      responseStatus: null,
      error: null,
    };
    const outcome = await postOnce(sandbox, record);
    if (outcome === 'done') return;
    if (outcome === 'give-up' || attempt === settings.callbackMaxAttempts) break;
    await sleep(settings.callbackRetryDelayMs * 2 ** (attempt - 1), undefined, { signal: closing.signal });
  }
  if (closing.signal.aborted) return;
  sandbox.state.counters.callbacksFailed++;
  settings.log?.warn({ notificationId: callback.notificationId, status: callback.body.status }, 'sandbox VA Notify: callback given up');
}

/** One POST of a callback, recorded in the state: done (2xx), retry, or given up. */
async function postOnce(sandbox: Sandbox, record: CallbackAttempt): Promise<'done' | 'retry' | 'give-up'> {
  sandbox.state.callbacks.push(record);
  sandbox.state.counters.callbacksPosted++;
  try {
    const response = await fetch(record.url, {
      method: 'POST',
      headers: record.headers,
      body: JSON.stringify(record.body),
      redirect: 'manual',
      signal: AbortSignal.any([AbortSignal.timeout(sandbox.settings.callbackTimeoutMs), sandbox.closing.signal]),
    });
    await response.arrayBuffer().catch(() => undefined);
    record.responseStatus = response.status;
    if (response.status < 300) return 'done';
    const retry = response.status >= 500 || (response.status === 429 && record.mechanism === 'notification');
    return retry ? 'retry' : 'give-up';
  } catch (error) {
    record.error = (error as Error).name === 'TimeoutError' ? 'timeout' : 'connection error';
    return 'retry';
  }
}

async function deliver(sandbox: Sandbox, callback: Callback): Promise<void> {
  const target = callback.url ?? sandbox.serviceCallbackUrl;
  if (target === null) return;
  const { state, settings } = sandbox;
  if (settings.random() < state.faults.dropCallbackRate) {
    state.counters.callbacksDropped++;
    return;
  }
  const copies = settings.random() < state.faults.duplicateCallbackRate ? 2 : 1;
  for (let copy = 0; copy < copies; copy++) await post(sandbox, callback, target);
}

function outcomeOf(state: SandboxState, n: StoredNotification): { status: SandboxStatus; statusReason: string | null } {
  if (n.recipientIdentifier?.id_type !== 'ICN') return { status: 'delivered', statusReason: null };
  return state.outcomeOverrides.get(n.recipientIdentifier.id_value) ?? sandboxOutcomeFor(n.recipientIdentifier.id_value);
}

/** created → sending → the ICN's outcome, then the callbacks those changes produce. */
async function progress(sandbox: Sandbox, n: StoredNotification): Promise<void> {
  const { state, settings, stamp } = sandbox;
  await sleep(settings.callbackDelayMs, undefined, { signal: sandbox.closing.signal });
  const outcome = outcomeOf(state, n);
  const mechanism: CallbackAttempt['mechanism'] = n.callbackUrl === null ? 'service' : 'notification';
  const make = (stale: boolean): Callback => ({
    notificationId: n.id,
    mechanism,
    url: n.callbackUrl,
    body: callbackBody(n, mechanism),
    stale,
  });

  n.emailAddress ??= SandboxRecipientEmail;
  n.sentAt = stamp();
  n.status = 'sending';
  const sending = make(false);
  let final: Callback | null = null;
  if (outcome.status !== 'sending') {
    n.status = outcome.status;
    n.statusReason = outcome.statusReason;
    n.completedAt = stamp();
    final = make(false);
  }
  // Per-notification callbacks carry every status change; service-level ones only completed
  // statuses unless the service asked for all.
  const everyStatus = mechanism === 'notification' || settings.callbackStatuses === 'all';
  let callbacks: Callback[];
  if (final === null) callbacks = everyStatus ? [sending] : [];
  else if (state.faults.reorderCallbacks) callbacks = [final, { ...sending, stale: true }];
  else callbacks = everyStatus ? [sending, final] : [final];
  for (const callback of callbacks) await deliver(sandbox, callback);
}

// ---- HTTP ----

function answer(res: ServerResponse, reply: HttpAnswer): void {
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function countRejected(state: SandboxState, status: number): void {
  state.counters.sendsRejected[status] = (state.counters.sendsRejected[status] ?? 0) + 1;
}

const methodNotAllowed = () => new HttpAnswer(405, { result: 'error', message: 'The method is not allowed for the requested URL.' });

/** POST /v2/notifications/email, forced answers first. */
async function handleSend(sandbox: Sandbox, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'POST') return answer(res, methodNotAllowed());
  const { state } = sandbox;
  const { text, tooLarge } = await readBody(req);
  const forced = state.forcedResponses.shift();
  if (forced !== undefined && 'hang' in forced) {
    state.counters.sendsHung++;
    return;
  }
  if (forced !== undefined && 'status' in forced) {
    countRejected(state, forced.status);
    return answer(res, forcedAnswer(sandbox.settings, forced));
  }
  const result = await acceptSend(sandbox, req, text, tooLarge);
  if (result instanceof HttpAnswer) {
    countRejected(state, result.status);
    return answer(res, result);
  }
  state.counters.sendsAccepted++;
  if (result.notification !== null) store(sandbox, result.notification);
  answerAccepted(req, res, result.answer, forced);
}

function store(sandbox: Sandbox, notification: StoredNotification): void {
  sandbox.state.notifications.set(notification.id, notification);
  sandbox.order.push(notification.id);
  track(sandbox, progress(sandbox, notification));
}

/** The 201, or what a forced answer makes of it: a cut connection or an unreadable body. */
function answerAccepted(req: IncomingMessage, res: ServerResponse, accepted: HttpAnswer, forced: ForcedResponse | undefined): void {
  if (forced !== undefined && 'acceptThenDrop' in forced) {
    req.socket.destroy();
    return;
  }
  if (forced !== undefined && 'acceptWithUnreadableBody' in forced) {
    res.writeHead(201, { 'content-type': 'text/html' });
    res.end('<html><body>Created</body></html>');
    return;
  }
  answer(res, accepted);
}

/** A read needs GET and the send's authentication; false when it has been answered already. */
async function readAllowed(sandbox: Sandbox, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  if (req.method !== 'GET') {
    answer(res, methodNotAllowed());
    return false;
  }
  const auth = await authenticate(sandbox.settings, req);
  if (auth instanceof HttpAnswer) {
    answer(res, auth);
    return false;
  }
  return true;
}

/** GET /v2/notifications: by reference and status, newest first, paged. */
async function handleList(sandbox: Sandbox, req: IncomingMessage, res: ServerResponse, requestUrl: URL): Promise<void> {
  if (!(await readAllowed(sandbox, req, res))) return;
  sandbox.state.counters.getsByReference++;
  answer(res, listNotifications(sandbox, requestUrl.searchParams));
}

/** GET /v2/notifications/{id}. */
async function handleGetById(sandbox: Sandbox, req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
  if (!(await readAllowed(sandbox, req, res))) return;
  sandbox.state.counters.getsById++;
  const decoded = decodeURIComponent(id);
  if (!isUuid(decoded)) return answer(res, v2Error(400, 'ValidationError', 'notification_id is not a valid UUID'));
  const found = sandbox.state.notifications.get(decoded.toLowerCase());
  answer(res, found ? new HttpAnswer(200, notificationView(sandbox, found)) : v2Error(404, 'NoResultFound', 'No result found'));
}

/** Routes by path; each handler answers a method it does not serve with 405. */
async function handle(sandbox: Sandbox, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requestUrl = new URL(req.url ?? '/', 'http://sandbox');
  const path = requestUrl.pathname.replace(/\/+$/, '');
  if (sandbox.state.faults.latencyMs > 0) await sleep(sandbox.state.faults.latencyMs, undefined, { signal: sandbox.closing.signal });

  if (path === '/v2/notifications/email') return handleSend(sandbox, req, res);
  if (path === '/v2/notifications') return handleList(sandbox, req, res, requestUrl);
  const byId = /^\/v2\/notifications\/([^/]+)$/.exec(path);
  if (byId) return handleGetById(sandbox, req, res, byId[1]!);
  answer(res, new HttpAnswer(404, { result: 'error', message: 'The requested URL was not found on the server.' }));
}

async function listen(sandbox: Sandbox, options: SandboxVaNotifyOptions): Promise<Server> {
  const server = createServer((req, res) => {
    handle(sandbox, req, res).catch((error: unknown) => {
      if (sandbox.closing.signal.aborted) return;
      sandbox.settings.log?.error({ err: error }, 'sandbox VA Notify: request failed');
      if (!res.headersSent) answer(res, internalError());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  sandbox.url = `http://${host}:${address.port}`;
  return server;
}

async function close(sandbox: Sandbox, server: Server): Promise<void> {
  sandbox.closing.abort();
  const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await stopped;
  await Promise.all([...sandbox.pending]);
}

export async function startSandboxVaNotify(options: SandboxVaNotifyOptions = {}): Promise<SandboxVaNotify> {
  const sandbox: Sandbox = {
    settings: settingsFrom(options),
    state: initialState(options.faults),
    stamp: microsecondClock(),
    closing: new AbortController(),
    pending: new Set(),
    order: [],
    window: [],
    url: '',
    serviceCallbackUrl: options.callbackUrl ?? null,
  };
  const server = await listen(sandbox, options);
  options.log?.warn({ url: sandbox.url }, 'sandbox VA Notify: no real email is sent');

  let closed: Promise<void> | undefined;
  return {
    url: sandbox.url,
    state: sandbox.state,
    setCallbackUrl(next) {
      sandbox.serviceCallbackUrl = next;
    },
    async whenIdle() {
      while (sandbox.pending.size > 0) await Promise.all([...sandbox.pending]);
    },
    close() {
      closed ??= close(sandbox, server);
      return closed;
    },
  };
}
