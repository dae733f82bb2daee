// The MHV Account Activity Log client: an MHV session per veteran (correlation id), cached until
// shortly before it expires, and one activity post per delivered tracking email. Every answer is
// turned into one of four outcomes by classifyAalOutcome, the single place that says what is
// worth retrying and what is not the event's fault.
import type { Config } from '../config.ts';
import { SandboxAalCredentials } from '../sandbox/aal.ts';

export interface AalClientOptions {
  /** MHV user-management base URL; paths `/v1/usermgmt/...` are appended to it. */
  baseUrl: string;
  appToken: string;
  apiKey: string;
  /** Timeout of one HTTP request (session or activity). */
  timeoutMs: number;
  activityType: string;
  action: string;
  performerType: string;
  /** Sessions kept at most (least recently used ones are dropped first). */
  sessionCacheSize?: number;
  /** A session is renewed this long before its `expires`, so it never lapses in flight. */
  sessionRenewBeforeMs?: number;
}

/** One delivered tracking email, as the AAL should record it. */
export interface AalActivity {
  /** The veteran's MHV correlation id (sent as the integer `userProfileId`). */
  correlationId: string;
  /** When VA Notify completed the delivery. */
  completionTime: Date;
  detailValue: string;
}

export type AalOutcome =
  | { kind: 'posted' }
  /** The AAL refused the event itself: retrying cannot help. */
  | { kind: 'permanent'; status?: number; reason: string }
  /**
   * MHV refused our credentials (403 on the session or the post, 401 on the session: a bad, expired or rotated
   * x-api-key or appToken). Not the event's fault, and no event will pass until a person fixes the
   * credentials: the caller stops posting rather than fail or retry the event.
   */
  | { kind: 'unauthorized'; status: number; reason: string }
  /** The AAL or the path to it failed: the same post may succeed later. */
  | { kind: 'transient'; status?: number; reason: string };

export interface AalClient {
  post(activity: AalActivity): Promise<AalOutcome>;
  /** Sessions currently cached (for tests and diagnostics). */
  readonly cachedSessions: number;
}

/** What one HTTP exchange came to: an answer with its body, or an error before any answer. */
export type AalExchange = { status: number; body: string } | { error: unknown };

const ReasonLimit = 500;

/**
 * The one rule for AAL answers: 2xx is posted; 5xx, 408, 429, timeouts and connection errors are
 * transient; 401 is transient too (the session expired or was refused: renewed and retried);
 * 403 is unauthorized: MHV's API gateway, keyed by x-api-key, answers it for a bad, expired or
 * rotated key, which is no fault of the event, so the event is neither failed nor charged and
 * posting pauses instead; every other 4xx is permanent, with the AAL's own message as the reason,
 * so that a request the AAL will never take does not cause a retry storm.
 */
export function classifyAalOutcome(exchange: AalExchange): AalOutcome {
  if ('error' in exchange) return { kind: 'transient', reason: describeError(exchange.error) };
  const { status, body } = exchange;
  if (status >= 200 && status < 300) return { kind: 'posted' };
  const reason = `AAL answered ${status}${messageOf(body) ? `: ${messageOf(body)}` : ''}`;
  if (status >= 500 || [401, 408, 429].includes(status)) return { kind: 'transient', status, reason };
  if (status === 403) return { kind: 'unauthorized', status, reason };
  if (status >= 400) return { kind: 'permanent', status, reason };
  return { kind: 'transient', status, reason };
}

function describeError(error: unknown): string {
  const name = (error as { name?: string } | null)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return 'AAL request timed out';
  const cause = (error as { cause?: { code?: string; message?: string } } | null)?.cause;
  const detail = cause?.code ?? cause?.message ?? (error as Error | null)?.message ?? String(error);
  return `AAL unreachable: ${detail}`.slice(0, ReasonLimit);
}

/** The message of an MHV error body (`message`, `developerMessage`, `error`), else the text itself. */
function messageOf(body: string): string {
  const text = body.trim();
  if (text === '') return '';
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    for (const key of ['message', 'developerMessage', 'error', 'errorMessage']) {
      const value = parsed?.[key];
      if (typeof value === 'string' && value.trim() !== '') return value.trim().slice(0, ReasonLimit);
    }
  } catch {
    // Not JSON: the text is the message.
  }
  return text.replace(/\s+/g, ' ').slice(0, ReasonLimit);
}

/** RFC 7231 IMF-fixdate, e.g. `Thu, 14 May 2026 13:22:41 GMT`. */
export function httpDate(date: Date): string {
  return date.toUTCString();
}

interface Session {
  token: string;
  /** Epoch ms after which the session is not used any more. */
  usableUntil: number;
}

class SessionError extends Error {
  override name = 'SessionError';
  readonly outcome: AalOutcome;
  constructor(outcome: AalOutcome) {
    super(outcome.kind === 'posted' ? 'session' : outcome.reason);
    this.outcome = outcome;
  }
}

export function createAalClient(options: AalClientOptions): AalClient {
  const base = options.baseUrl.replace(/\/+$/, '');
  const cacheSize = options.sessionCacheSize ?? 1000;
  const renewBeforeMs = options.sessionRenewBeforeMs ?? 30_000;
  // Insertion order is recency order: a hit is moved to the end, the first entry is the oldest.
  // Pending fetches are cached too, so concurrent posts for one veteran share one session request.
  const sessions = new Map<string, Promise<Session>>();

  function remember(correlationId: string, session: Promise<Session>): void {
    sessions.delete(correlationId);
    sessions.set(correlationId, session);
    while (sessions.size > cacheSize) {
      const oldest = sessions.keys().next().value;
      if (oldest === undefined) break;
      sessions.delete(oldest);
    }
  }

  async function fetchSession(correlationId: string): Promise<Session> {
    let response: Response;
    try {
      response = await fetch(`${base}/v1/usermgmt/auth/session`, {
        method: 'GET',
        headers: { appToken: options.appToken, mhvCorrelationId: correlationId, 'x-api-key': options.apiKey },
        signal: AbortSignal.timeout(options.timeoutMs),
      });
    } catch (error) {
      throw new SessionError(classifyAalOutcome({ error }));
    }
    const body = await readBody(response);
    if ('error' in body) throw new SessionError(classifyAalOutcome(body));
    const classified = classifyAalOutcome({ status: response.status, body: body.text });
    // A 401 elsewhere is a session that lapsed; this request carries none, so it is our appToken or
    // key that was refused, as with a 403: no retry helps until a person fixes them.
    const outcome: AalOutcome =
      classified.kind === 'transient' && classified.status === 401 ? { ...classified, kind: 'unauthorized', status: 401 } : classified;
    if (outcome.kind !== 'posted') {
      throw new SessionError({ ...outcome, reason: `session: ${scrub(outcome.reason, correlationId)}` });
    }
    const token = response.headers.get('token');
    if (token === null || token === '') {
      throw new SessionError({ kind: 'transient', status: response.status, reason: 'session: AAL answered without a token header' });
    }
    const expires = Date.parse(response.headers.get('expires') ?? '');
    // Without a readable expiry the session serves this post only.
    const usableUntil = Number.isNaN(expires) ? 0 : expires - renewBeforeMs;
    return { token, usableUntil };
  }

  async function session(correlationId: string): Promise<Session> {
    const cached = sessions.get(correlationId);
    if (cached !== undefined) {
      // A failed fetch is removed by its fetcher, so a rejection here is a fetch still in flight
      // when this post joined it: its failure is this post's failure too.
      const settled = await cached;
      if (sessions.get(correlationId) !== cached) return session(correlationId);
      if (settled.usableUntil > Date.now()) {
        remember(correlationId, cached);
        return settled;
      }
      sessions.delete(correlationId);
    }
    const pending = fetchSession(correlationId);
    remember(correlationId, pending);
    try {
      return await pending;
    } catch (error) {
      if (sessions.get(correlationId) === pending) sessions.delete(correlationId);
      throw error;
    }
  }

  /** Drops the cached session if it is still the one the AAL refused (another post may have renewed it). */
  async function forget(correlationId: string, token: string): Promise<void> {
    const cached = sessions.get(correlationId);
    if (cached === undefined) return;
    const settled = await cached.catch(() => undefined);
    if (sessions.get(correlationId) === cached && (settled === undefined || settled.token === token)) {
      sessions.delete(correlationId);
    }
  }

  async function postActivity(token: string, body: string): Promise<AalExchange> {
    try {
      const response = await fetch(`${base}/v1/usermgmt/activity`, {
        method: 'POST',
        headers: { Token: token, 'x-api-key': options.apiKey, 'Content-Type': 'application/json' },
        body,
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      const read = await readBody(response);
      return 'error' in read ? read : { status: response.status, body: read.text };
    } catch (error) {
      return { error };
    }
  }

  async function post(activity: AalActivity): Promise<AalOutcome> {
    const { correlationId } = activity;
    if (!/^[1-9]\d{0,15}$/.test(correlationId) || !Number.isSafeInteger(Number(correlationId))) {
      return { kind: 'permanent', reason: 'the MHV correlation id is not a positive integer (userProfileId)' };
    }
    if (Number.isNaN(activity.completionTime.getTime())) {
      return { kind: 'permanent', reason: 'the completion time is not a valid date' };
    }
    const body = JSON.stringify({
      userProfileId: Number(correlationId),
      activityType: options.activityType,
      action: options.action,
      completionTime: httpDate(activity.completionTime),
      performerType: options.performerType,
      detailValue: activity.detailValue,
      status: 1,
    });
    try {
      let current = await session(correlationId);
      let exchange = await postActivity(current.token, body);
      if (!('error' in exchange) && exchange.status === 401) {
        // The session lapsed or was revoked early: one new session, one more post.
        await forget(correlationId, current.token);
        current = await session(correlationId);
        exchange = await postActivity(current.token, body);
      }
      const outcome = classifyAalOutcome(exchange);
      return outcome.kind === 'posted' ? outcome : { ...outcome, reason: scrub(outcome.reason, correlationId) };
    } catch (error) {
      if (error instanceof SessionError) return error.outcome;
      throw error;
    }
  }

  return {
    post,
    get cachedSessions() {
      return sessions.size;
    },
  };
}

async function readBody(response: Response): Promise<{ text: string } | { error: unknown }> {
  try {
    return { text: await response.text() };
  } catch (error) {
    return { error };
  }
}

/** An AAL message may echo the veteran's id back; it is stored and may be shown, so it is removed. */
function scrub(reason: string, correlationId: string): string {
  return reason.split(correlationId).join('[userProfileId]');
}

/**
 * The client the service uses: the configured MHV gateway, or, when AAL_BASE_URL is unset, the
 * given base URL of the built-in sandbox with the sandbox's credentials.
 */
export function aalClientFromConfig(config: Config, baseUrl: string): AalClient {
  const real = config.AAL_BASE_URL !== undefined;
  return createAalClient({
    baseUrl: config.AAL_BASE_URL ?? baseUrl,
    appToken: real ? (config.AAL_APP_TOKEN ?? '') : (config.AAL_APP_TOKEN ?? SandboxAalCredentials.appToken),
    apiKey: real ? (config.AAL_API_KEY ?? '') : (config.AAL_API_KEY ?? SandboxAalCredentials.apiKey),
    timeoutMs: config.AAL_TIMEOUT_MS,
    activityType: config.AAL_ACTIVITY_TYPE,
    action: config.AAL_ACTION,
    performerType: config.AAL_PERFORMER_TYPE,
  });
}
