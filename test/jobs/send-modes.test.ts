// POST /v1/jobs/send in shadow and off mode, where no VA Notify may be configured at all: the run
// answers what it did (nothing, and why), never a 500.
import t from 'tap';
import { buildApp } from '../../src/app.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startSandboxAal } from '../../src/sandbox/aal.ts';
import { internalAuth, LogCapture } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';

for (const mode of ['shadow', 'off'] as const) {
  t.test(`${mode} with no VA Notify URL: the send job answers that it sent nothing`, async (t) => {
    const db = await testDatabase(t);
    const aal = await startSandboxAal();
    t.teardown(() => aal.close());
    const logs = new LogCapture();
    const app = await buildApp({
      config: testConfig({ DELIVERY_MODE: mode, LOG_LEVEL: 'info' }),
      sql: db.sql,
      logger: createLogger('info', logs),
      sandboxUrls: { aal: aal.url },
    });
    t.teardown(() => app.close());
    const response = await app.inject({ method: 'POST', url: '/v1/jobs/send', headers: internalAuth });
    t.equal(response.statusCode, 200);
    t.same(response.json(), { sent: 0, recovered: 0, retried: 0, failed: 0, released: 0, paused: false, deliveryMode: mode });
    t.notMatch(logs.text, /request failed/);
  });
}
