// Builds the service from a config and a database handle. It never listens and never reads the
// environment: server.ts does that, and tests build the app with explicit config.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import sensible from '@fastify/sensible';
import rateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { vaNotifySigningSecrets, type Config } from './config.ts';
import type { Sql } from './db/connect.ts';
import { installErrorHandler } from './http/errors.ts';
import { documentInternalRoutes, registerOpenApi } from './http/openapi.ts';
import { RequestLogController } from './http/log-controller.ts';
import { requestIdOf, traceRequests } from './http/request-tracing.ts';
import { requireBearerToken } from './http/internal-auth.ts';
import { ErrorBody } from './http/schemas.ts';
import { createLogger } from './logger.ts';
import { healthRoutes } from './health/routes.ts';
import { groupReadyVeterans } from './grouping/grouping-job.ts';
import { createRateBudget } from './sending/rate-budget.ts';
import { runSend } from './sending/sender.ts';
import { vaNotifyClientFromConfig } from './sending/va-notify-client.ts';
import { SandboxDefaults } from './sandbox/va-notify.ts';
import { aalClientFromConfig } from './aal/aal-client.ts';
import { runAalPosts } from './aal/aal-worker.ts';
import { runSweep } from './sweep/sweep-job.ts';
import { runRetention } from './retention/retention-job.ts';
import { createJobRunner, type JobName, type JobRunner } from './jobs/runner.ts';
import { jobRoutes } from './jobs/routes.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { metricsRoute, operatorRoutes } from './operator/routes.ts';
import { operatorActionRoutes } from './operator/action-routes.ts';
import { vaNotifyCallbackRoutes } from './callbacks/routes.ts';
import { shadowRoutes } from './shadow/routes.ts';
import { cutoverRoutes } from './cutover/routes.ts';
import { ingestRoutes } from './ingest/routes.ts';
import type { EventBusConsumer, EventBusConsumerOptions } from './event-bus/consumer.ts';

export interface AppOptions {
  config: Config;
  sql: Sql;
  /** A pino logger; defaults to one at config.LOG_LEVEL on stdout. */
  logger?: Logger;
  /**
   * Where the sandbox servers listen when VA Notify or AAL are not configured (server.ts starts
   * them; tests start their own). A configured base URL always wins.
   */
  sandboxUrls?: { vaNotify?: string; aal?: string };
  /** Overrides for the event-bus consumer (tests: an unsecured OAUTHBEARER token, a client id). */
  eventBus?: Pick<EventBusConsumerOptions, 'tokenProvider' | 'clientId' | 'onClient'>;
}

export interface RegisteredRoute {
  method: string;
  url: string;
  /** The route's schema as Fastify validates and serialises with it. */
  schema?: Record<string, unknown>;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    sql: Sql;
    jobs: JobRunner;
    metrics: Metrics;
    /** The event-bus consumer, when EVENT_BUS_BROKERS is set. */
    eventBus: EventBusConsumer | undefined;
    /** Every route the app serves, for the OpenAPI drift test. */
    registeredRoutes: RegisteredRoute[];
  }
}

export async function buildApp(options: AppOptions) {
  const { config, sql } = options;
  const app = Fastify({
    loggerInstance: (options.logger ?? createLogger(config.LOG_LEVEL)) as FastifyBaseLogger,
    logController: new RequestLogController({ requestIdLogLabel: 'requestId' }),
    // The client address (rate limits, logs) is the one the last trusted proxy saw: trusting every
    // hop would let a client choose its address by sending X-Forwarded-For itself.
    trustProxy: config.TRUST_PROXY.includes('none') ? false : config.TRUST_PROXY,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true } },
    requestIdHeader: false,
    genReqId: requestIdOf,
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorate('config', config);
  app.decorate('sql', sql);
  const registeredRoutes: RegisteredRoute[] = [];
  app.decorate('registeredRoutes', registeredRoutes);
  app.addHook('onRoute', (route) => {
    if ((route.schema as { hide?: boolean } | undefined)?.hide) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      // Read when asked: hooks that run after this one complete the schema (src/http/openapi.ts).
      if (method !== 'HEAD')
        registeredRoutes.push({
          method,
          url: route.url,
          get schema() {
            return route.schema as Record<string, unknown> | undefined;
          },
        });
    }
  });

  app.addSchema(ErrorBody);
  installErrorHandler(app);
  await app.register(sensible);
  await app.register(rateLimit, { max: config.RATE_LIMIT_PER_MINUTE, timeWindow: '1 minute' });
  await registerOpenApi(app as unknown as FastifyInstance);

  const log = app.log as Logger;
  const metrics = createMetrics(sql);
  app.decorate('metrics', metrics);
  traceRequests(app as unknown as FastifyInstance, metrics);
  const aalBaseUrl = config.AAL_BASE_URL ?? options.sandboxUrls?.aal;
  if (aalBaseUrl === undefined) throw new Error('AAL_BASE_URL is not set and no sandbox AAL was started');
  // One client for the process: it caches MHV sessions per veteran.
  const aal = aalClientFromConfig(config, aalBaseUrl);

  // The sandbox's credentials apply only when no real VA Notify is configured.
  const vaNotifyBaseUrl = config.VA_NOTIFY_BASE_URL ?? options.sandboxUrls?.vaNotify;
  if (vaNotifyBaseUrl === undefined && config.DELIVERY_MODE === 'live') {
    throw new Error('VA_NOTIFY_BASE_URL is not set and no sandbox VA Notify was started');
  }
  const vaNotify =
    vaNotifyBaseUrl === undefined
      ? undefined
      : vaNotifyClientFromConfig(config, vaNotifyBaseUrl, {
          ...(config.VA_NOTIFY_BASE_URL === undefined ? SandboxDefaults : {}),
          onRequest: (operation, outcome, seconds) => metrics.vaNotifyLatency.observe({ operation, outcome }, seconds),
        });
  const budget = createRateBudget(sql, config.VA_NOTIFY_RATE_LIMIT_PER_MINUTE);

  // A run handles one batch; one that fills its batch asks for the next run at once, so the timers
  // pace idle polling, never throughput.
  const moreIf =
    <R>(full: (result: R) => boolean, name: JobName) =>
    (result: R) => {
      if (full(result)) jobs.wake(name);
      return result;
    };
  const jobs: JobRunner = createJobRunner(
    {
      grouping: (_signal, log) =>
        groupReadyVeterans({ sql, config, log })
          .then(moreIf((r) => r.filled, 'grouping'))
          .then((r) => r.result),
      ...(vaNotify && {
        send: (signal: AbortSignal, log: Logger) =>
          runSend({ sql, config, vaNotify, budget, log, signal, onOutcome: (outcome) => metrics.sends.inc({ outcome }) }).then(
            moreIf((r) => !r.paused && r.sent + r.recovered + r.retried + r.failed >= config.SEND_BATCH_SIZE, 'send'),
          ),
      }),
      aal: (signal, log) =>
        runAalPosts({ sql, config, aal, log, signal, onOutcome: (outcome) => metrics.aalPosts.inc({ outcome }) }).then(
          moreIf((r) => r.posted + r.retried + r.failed >= config.AAL_BATCH_SIZE, 'aal'),
        ),
      sweep: (signal, log) => runSweep({ sql, config, vaNotify, budget, log, signal, metrics, wake: (job) => jobs.wake(job) }),
      retention: (signal, log) =>
        runRetention({ sql, config, log, signal, onRemoved: (record, count) => metrics.retentionRemoved.inc({ record }, count) }).then(
          moreIf((r) => r.status === 'done' && r.more, 'retention'),
        ),
    },
    log,
  );
  app.decorate('jobs', jobs);
  // Loaded only when configured: the consumer, the Kafka client and the MSK token signer add about
  // 10 MB to the app's heap, which every full collection would mark again on a service not using them.
  const eventBus =
    config.EVENT_BUS_BROKERS.length === 0
      ? undefined
      : (await import('./event-bus/consumer.ts')).createEventBusConsumer({
          config,
          sql,
          log,
          ...options.eventBus,
          onRecords: (outcome, count) => metrics.eventBusRecords.inc({ outcome }, count),
          onDispenses: (outcome, count) => metrics.dispensesIngested.inc({ outcome }, count),
          onLag: (topic, partition, lag) => {
            if (lag === null) metrics.eventBusLag.remove({ topic, partition: String(partition) });
            else metrics.eventBusLag.set({ topic, partition: String(partition) }, lag);
          },
        });
  app.decorate('eventBus', eventBus);
  let wakeListener: { unlisten(): Promise<void> } | undefined;
  app.addHook('onReady', async () => {
    if (config.JOBS_ENABLED) {
      jobs.start({
        grouping: config.GROUPING_INTERVAL_SECONDS,
        send: config.SEND_INTERVAL_SECONDS,
        aal: config.AAL_INTERVAL_SECONDS,
        sweep: config.SWEEP_INTERVAL_SECONDS,
        retention: config.RETENTION_INTERVAL_SECONDS,
      });
      // A hint only: the timers find the work anyway if a notification is missed.
      wakeListener = await sql.listen('tracking_email_queued', () => jobs.wake('send'));
    }
    eventBus?.start();
  });
  // Before the server closes: stop claiming work and let in-flight runs finish within the grace period.
  app.addHook('preClose', async () => {
    await wakeListener?.unlisten().catch(() => {});
    await Promise.all([jobs.stop(config.SHUTDOWN_GRACE_SECONDS * 1000), eventBus?.stop(config.SHUTDOWN_GRACE_SECONDS * 1000)]);
  });
  // The server's close ends the connections idle at that moment; one whose request (a job trigger
  // whose run outlasted the grace period) is still being answered would then be kept alive after
  // its answer and hold the close open until the client let go. Answers while shutting down close
  // their connection instead.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (jobs.stopping) reply.header('connection', 'close');
    done(null, payload);
  });

  await app.register(healthRoutes);
  await app.register(metricsRoute);

  // Internal endpoints: ingest, job triggers, operator views and actions. Each domain adds its routes here.
  await app.register(async (internal) => {
    // The limit is counted before authentication, so that guessing tokens is limited too (the
    // route-level limiter the plugin adds then finds the request already counted).
    internal.addHook('onRequest', app.rateLimit());
    internal.addHook('onRequest', requireBearerToken(config.INTERNAL_API_TOKENS));
    documentInternalRoutes(internal as unknown as FastifyInstance);
    await internal.register(ingestRoutes, { onOutcome: (outcome, count) => metrics.dispensesIngested.inc({ outcome }, count) });
    await internal.register(jobRoutes);
    await internal.register(operatorRoutes);
    await internal.register(operatorActionRoutes);
    await internal.register(shadowRoutes);
    await internal.register(cutoverRoutes);
  });

  // VA Notify's delivery-status callbacks authenticate with their own tokens or signature.
  await app.register(vaNotifyCallbackRoutes, {
    // The sandbox signs per-notification callbacks with its own key, which is public: accepted only
    // while this process sends to a sandbox it started, never merely because VA Notify is unset.
    ...(config.VA_NOTIFY_BASE_URL === undefined &&
      options.sandboxUrls?.vaNotify !== undefined && {
        signatureSecrets: [...vaNotifySigningSecrets(config), SandboxDefaults.secret],
      }),
    onStatusEvent: ({ status, outcome }) => metrics.callbacks.inc({ outcome, status }),
    // Nothing in a refused callback is trusted, its status least of all.
    onCallbackRefused: (outcome) => metrics.callbacks.inc({ outcome, status: 'none' }),
  });
  return app as unknown as FastifyInstance;
}
