// A stand-in for the MHV Account Activity Log that follows the contract (reference/mhv-aal.md):
// sessions per correlation id in response headers, then strictly validated activity posts. The
// service runs against it when no AAL credentials are configured, and tests use it to see exactly
// what the AAL would receive. Fault knobs let a test make it unavailable, flaky or refusing.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Credentials the sandbox accepts by default (and the service presents to it when AAL is unset). */
export const SandboxAalCredentials = { appToken: 'sandbox-aal-app-token', apiKey: 'sandbox-aal-api-key' } as const;

export interface SandboxAalOptions {
  appToken?: string;
  apiKey?: string;
  /** Lifetime of an issued session; 600 s unless given. */
  sessionTtlSeconds?: number;
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

/** An accepted activity, as the AAL stored it, with the headers it arrived with. */
export interface SandboxAalEvent {
  id: string;
  body: {
    userProfileId: number;
    activityType: string;
    action: string;
    completionTime: string;
    performerType: string;
    detailValue: string;
    status: number;
  };
  headers: { token: string; xApiKey: string; contentType: string };
  /** The correlation id the presenting session was issued for. */
  sessionCorrelationId: string;
  receivedAt: Date;
}

export interface SandboxAalRequest {
  method: string;
  path: string;
  status: number;
  /** The mhvCorrelationId header of a session request. */
  correlationId?: string;
}

export interface SandboxAalState {
  events: SandboxAalEvent[];
  /** Every request answered, in order. */
  requests: SandboxAalRequest[];
  sessionsIssued: number;
  postsAccepted: number;
  postsRejected: number;
  /** Every request is answered 503 while set. */
  down: boolean;
  /** The next n activity posts are answered 500. */
  failNext: number;
  /** Share (0..1) of activity posts answered 500 at random. */
  failRate: number;
  /** Every activity post is answered with this status and message while set. */
  forceStatus: { status: number; message: string } | undefined;
  /**
   * Every session request is answered with this status and message while set, before any header is
   * checked, as MHV's API gateway answers a refused x-api-key (403) before the request reaches MHV.
   */
  forceSessionStatus: { status: number; message: string } | undefined;
  /** Requests are left unanswered while set (until close), to exercise client timeouts. */
  hang: boolean;
  /** Makes every issued session expired, as if MHV had ended them. */
  expireAllSessions(): void;
  /** Sessions issued for one correlation id. */
  sessionsFor(correlationId: string): number;
}

export interface SandboxAal {
  url: string;
  state: SandboxAalState;
  close(): Promise<void>;
}

const ActivityFields = {
  userProfileId: 'integer',
  activityType: 'string',
  action: 'string',
  completionTime: 'string',
  performerType: 'string',
  detailValue: 'string',
  status: 'integer',
} as const;

const ImfFixdate = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;
const BodyLimitBytes = 64 * 1024;

/** The reasons an activity body breaks the contract; empty when it is valid. */
export function activityBodyProblems(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return ['the body must be a JSON object'];
  const record = body as Record<string, unknown>;
  const problems: string[] = [];
  const unknown = Object.keys(record).filter((key) => !(key in ActivityFields));
  if (unknown.length > 0) problems.push(`unknown fields: ${unknown.join(', ')}`);
  for (const [field, type] of Object.entries(ActivityFields)) {
    const value = record[field];
    if (value === undefined || value === null) problems.push(`${field} is required`);
    else if (type === 'integer' && !Number.isSafeInteger(value)) problems.push(`${field} must be an integer`);
    else if (type === 'string' && typeof value !== 'string') problems.push(`${field} must be a string`);
    else if (type === 'string' && (value as string).trim() === '') problems.push(`${field} must not be empty`);
  }
  const completionTime = record.completionTime;
  if (typeof completionTime === 'string' && completionTime.trim() !== '') {
    if (!ImfFixdate.test(completionTime) || Number.isNaN(Date.parse(completionTime))) {
      problems.push('completionTime must be an HTTP date (RFC 7231), e.g. "Thu, 14 May 2026 13:22:41 GMT"');
    }
  }
  if (typeof record.userProfileId === 'number' && Number.isSafeInteger(record.userProfileId) && record.userProfileId <= 0) {
    problems.push('userProfileId must be positive');
  }
  if (Number.isSafeInteger(record.status) && record.status !== 0 && record.status !== 1) problems.push('status must be 0 or 1');
  return problems;
}

export async function startSandboxAal(options: SandboxAalOptions = {}): Promise<SandboxAal> {
  const appToken = options.appToken ?? SandboxAalCredentials.appToken;
  const apiKey = options.apiKey ?? SandboxAalCredentials.apiKey;
  const ttlMs = (options.sessionTtlSeconds ?? 600) * 1000;
  const sessions = new Map<string, { correlationId: string; expiresAt: number }>();
  const issuedPerVeteran = new Map<string, number>();

  const state: SandboxAalState = {
    events: [],
    requests: [],
    sessionsIssued: 0,
    postsAccepted: 0,
    postsRejected: 0,
    down: false,
    failNext: 0,
    failRate: 0,
    forceStatus: undefined,
    forceSessionStatus: undefined,
    hang: false,
    expireAllSessions() {
      const past = Date.now() - 1;
      for (const session of sessions.values()) session.expiresAt = past;
    },
    sessionsFor(correlationId) {
      return issuedPerVeteran.get(correlationId) ?? 0;
    },
  };

  function answer(
    res: ServerResponse,
    request: SandboxAalRequest,
    status: number,
    body: object | undefined,
    headers: Record<string, string> = {},
  ): void {
    request.status = status;
    state.requests.push(request);
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { ...headers, ...(text ? { 'content-type': 'application/json' } : {}) });
    res.end(text);
    options.log?.info({ method: request.method, path: request.path, status }, 'sandbox AAL answered');
  }

  const error = (status: number, message: string) => ({ errorCode: status, message });

  function handleSession(req: IncomingMessage, res: ServerResponse, request: SandboxAalRequest): void {
    const correlationId = header(req, 'mhvcorrelationid');
    if (correlationId !== undefined) request.correlationId = correlationId;
    const forced = state.forceSessionStatus;
    if (forced !== undefined) {
      answer(res, request, forced.status, error(forced.status, forced.message));
      return;
    }
    if (header(req, 'apptoken') !== appToken) {
      answer(res, request, 401, error(401, 'invalid appToken'));
      return;
    }
    if (header(req, 'x-api-key') !== apiKey) {
      answer(res, request, 401, error(401, 'invalid x-api-key'));
      return;
    }
    if (correlationId === undefined || correlationId.trim() === '') {
      answer(res, request, 400, error(400, 'the mhvCorrelationId header is required'));
      return;
    }
    const token = randomBytes(24).toString('base64url');
    // The expiry travels as an HTTP date (whole seconds): the session ends no later than it says.
    const expiresAt = Math.floor((Date.now() + ttlMs) / 1000) * 1000;
    sessions.set(token, { correlationId, expiresAt });
    state.sessionsIssued += 1;
    issuedPerVeteran.set(correlationId, (issuedPerVeteran.get(correlationId) ?? 0) + 1);
    answer(res, request, 200, undefined, { token, expires: new Date(expiresAt).toUTCString() });
  }

  async function handleActivity(req: IncomingMessage, res: ServerResponse, request: SandboxAalRequest): Promise<void> {
    const reject = (status: number, message: string) => {
      state.postsRejected += 1;
      answer(res, request, status, error(status, message));
    };
    const raw = await readBody(req);
    if (header(req, 'x-api-key') !== apiKey) return reject(401, 'invalid x-api-key');
    const token = header(req, 'token');
    const session = token === undefined ? undefined : sessions.get(token);
    if (token === undefined || session === undefined) return reject(401, 'unknown session token');
    if (session.expiresAt <= Date.now()) return reject(401, 'session expired');
    if (state.forceStatus !== undefined) return reject(state.forceStatus.status, state.forceStatus.message);
    if (state.failNext > 0) {
      state.failNext -= 1;
      return reject(500, 'internal error');
    }
    if (state.failRate > 0 && Math.random() < state.failRate) return reject(500, 'internal error');
    if (raw === undefined) return reject(413, `the body exceeds ${BodyLimitBytes} bytes`);
    const contentType = header(req, 'content-type') ?? '';
    if (!/^application\/json\b/i.test(contentType)) return reject(415, 'Content-Type must be application/json');
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      return reject(400, 'the body is not valid JSON');
    }
    const problems = activityBodyProblems(body);
    if (problems.length > 0) return reject(400, problems.join('; '));
    const activity = body as SandboxAalEvent['body'];
    if (String(activity.userProfileId) !== session.correlationId) {
      return reject(400, "userProfileId is not the session's user");
    }
    state.postsAccepted += 1;
    state.events.push({
      id: randomUUID(),
      body: activity,
      headers: { token, xApiKey: header(req, 'x-api-key') ?? '', contentType },
      sessionCorrelationId: session.correlationId,
      receivedAt: new Date(),
    });
    answer(res, request, 200, { status: 'success' });
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const request: SandboxAalRequest = { method: req.method ?? 'GET', path, status: 0 };
    if (state.hang) return;
    if (state.down) {
      req.resume();
      if (req.method === 'POST') state.postsRejected += 1;
      return answer(res, request, 503, error(503, 'service unavailable'));
    }
    if (req.method === 'GET' && path.endsWith('/v1/usermgmt/auth/session')) {
      req.resume();
      return handleSession(req, res, request);
    }
    if (req.method === 'POST' && path.endsWith('/v1/usermgmt/activity')) {
      handleActivity(req, res, request).catch((cause: unknown) => {
        options.log?.warn({ err: cause }, 'sandbox AAL failed');
        if (!res.headersSent) answer(res, request, 500, error(500, 'internal error'));
      });
      return;
    }
    req.resume();
    answer(res, request, 404, error(404, `no route ${req.method} ${path}`));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  let closed: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The body as text, or undefined when it exceeds the limit. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  // An oversized body is read to its end (and dropped) so the answer can still be sent.
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= BodyLimitBytes) chunks.push(chunk as Buffer);
  }
  return size > BodyLimitBytes ? undefined : Buffer.concat(chunks).toString('utf8');
}
