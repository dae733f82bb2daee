// The service under test, alone in its process: built by buildApp exactly as server.ts builds it,
// from environment-style settings, listening on a loopback port. Its peak RSS is its own.
import { buildApp } from '../../src/app.ts';
import { testConfig } from '../../src/config.ts';
import { connect } from '../../src/db/connect.ts';
import { createLogger } from '../../src/logger.ts';
import { peakRssBytes, serveParent } from './child.ts';

const settings = JSON.parse(process.env.BENCH_SERVICE_SETTINGS ?? '{}') as Record<string, string>;
const sandboxUrls = JSON.parse(process.env.BENCH_SANDBOX_URLS ?? '{}') as { vaNotify?: string; aal?: string };
const config = testConfig(settings);
if (config.DATABASE_URL === undefined) throw new Error('the service process needs DATABASE_URL');
const sql = connect(config.DATABASE_URL, { max: config.DATABASE_POOL_MAX, applicationName: 'rx-bench-service' });
const app = await buildApp({ config, sql, logger: createLogger(config.LOG_LEVEL), sandboxUrls });
const url = await app.listen({ port: 0, host: '127.0.0.1' });

let stopped: Promise<void> | undefined;
serveParent(
  {
    peakRss: () => peakRssBytes(),
  },
  () => {
    stopped ??= (async () => {
      await app.close();
      await sql.end({ timeout: 5 });
    })();
    return stopped;
  },
);
process.send!({ type: 'ready', url });
