// The configuration schema: defaults, errors that name the variable, VA Notify key forms, and the
// settings that only make sense together.
import t from 'tap';
import { runScript } from '../support/cli.ts';
import { configError } from '../support/config-error.ts';
import { isCombinedApiKey, loadConfig, testConfig, vaNotifyCredentials, vaNotifySigningSecrets } from '../../src/config.ts';

const base = { NODE_ENV: 'test', INTERNAL_API_TOKENS: 'test-internal-token-0001' };
/** The configuration error the base settings with these on top are refused with. */
const errorOf = (settings: Record<string, string>) => configError(() => loadConfig({ ...base, ...settings }));
const serviceId = '6c7d9d2e-7a1b-4c55-9a0e-3f1d2c4b5a69';
const secret = '3f0c5d1e-9b2a-4e6f-8a7b-1c2d3e4f5a6b';
const templateId = '0f7a2c3d-1e2f-4a5b-8c9d-0e1f2a3b4c5d';

/** A live production deployment's settings, all but DELIVERY_START_AT. */
const liveProduction = {
  ...base,
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://rx@db.internal:5432/rx',
  VA_NOTIFY_BASE_URL: 'https://api.notifications.va.gov',
  VA_NOTIFY_SERVICE_ID: serviceId,
  VA_NOTIFY_API_KEY: secret,
  VA_NOTIFY_TEMPLATE_ID: templateId,
  VA_NOTIFY_CALLBACK_TOKENS: 'callback-token-0001',
  AAL_BASE_URL: 'https://apigw.myhealth.va.gov',
  AAL_APP_TOKEN: 'app-token',
  AAL_API_KEY: 'api-key',
};

t.test('defaults', async (t) => {
  const config = loadConfig({});
  t.equal(config.NODE_ENV, 'development');
  t.equal(config.PORT, 3000);
  t.equal(config.HOST, '127.0.0.1');
  t.equal(config.LOG_LEVEL, 'info');
  t.equal(config.DATABASE_URL, undefined, 'no DATABASE_URL: the embedded PostgreSQL');
  t.equal(config.DELIVERY_MODE, 'live');
  t.equal(config.DELIVERY_START_AT, undefined);
  t.equal(config.GROUPING_QUIET_MINUTES, 60);
  t.equal(config.VA_NOTIFY_BASE_URL, undefined, 'no VA Notify settings: the sandbox');
  t.equal(config.VA_NOTIFY_RATE_LIMIT_PER_MINUTE, 2900, 'under VA Notify’s 3000 a minute');
  t.equal(config.VA_NOTIFY_RETENTION_DAYS, 7);
  t.equal(config.EMAIL_INCLUDE_DRUG_NAMES, false, 'no drug names (PHI) by default');
  t.same(config.VA_NOTIFY_CALLBACK_TOKENS, ['local-dev-callback-token']);
  t.equal(config.JOBS_ENABLED, true);
});

t.test('values from the environment are converted', async (t) => {
  const config = loadConfig({
    ...base,
    PORT: '8080',
    JOBS_ENABLED: 'false',
    EMAIL_INCLUDE_DRUG_NAMES: 'true',
    DELIVERY_MODE: 'shadow',
    DELIVERY_START_AT: '2026-06-01T14:00:00-04:00',
    VA_NOTIFY_CALLBACK_TOKENS: ' first-callback-token , second-callback-token ,',
    LOG_LEVEL: '',
  });
  t.equal(config.PORT, 8080);
  t.equal(config.JOBS_ENABLED, false);
  t.equal(config.EMAIL_INCLUDE_DRUG_NAMES, true);
  t.equal(config.DELIVERY_MODE, 'shadow');
  t.same(config.DELIVERY_START_AT, new Date('2026-06-01T18:00:00Z'));
  t.same(config.VA_NOTIFY_CALLBACK_TOKENS, ['first-callback-token', 'second-callback-token']);
  t.equal(config.LOG_LEVEL, 'info', 'an empty value is unset');
});

t.test('a bad value names its variable', async (t) => {
  for (const PORT of ['abc', '70000', '-1', '80.5', '1e3', '0x50']) {
    t.match(errorOf({ PORT }), /^invalid configuration: PORT: /, PORT);
  }
  t.equal(
    errorOf({ GROUPING_QUIET_MINUTES: '1e3' }),
    'invalid configuration: GROUPING_QUIET_MINUTES: Expected integer (got "1e3")',
    'not read as 1',
  );
  t.match(errorOf({ DELIVERY_MODE: 'shadowed' }), 'DELIVERY_MODE:');
  t.match(errorOf({ DELIVERY_START_AT: 'June 1st' }), 'DELIVERY_START_AT:');
  t.match(errorOf({ DELIVERY_START_AT: '2026-06-01T14:00:00' }), 'DELIVERY_START_AT:', 'an instant needs its offset');
  for (const DELIVERY_START_AT of [
    '2026-02-30T14:00:00Z',
    '2026-06-01T24:00:00Z',
    '2026-06-31T14:00:00-04:00',
    '2026-06-01T14:60:00Z',
    '2026-06-01T14:00:00+15:00',
  ]) {
    t.equal(
      errorOf({ DELIVERY_START_AT }),
      `invalid configuration: DELIVERY_START_AT: not a real date and time (got ${JSON.stringify(DELIVERY_START_AT)})`,
      `${DELIVERY_START_AT} is refused, not rolled over`,
    );
  }
  t.same(
    loadConfig({ ...base, DELIVERY_START_AT: '2028-02-29T23:59:59.5-05:00' }).DELIVERY_START_AT,
    new Date('2028-03-01T04:59:59.500Z'),
    'a leap day is a real date',
  );
  t.match(errorOf({ CUTOVER_HOLD_HOURS: '169' }), 'CUTOVER_HOLD_HOURS:');
  t.match(errorOf({ CUTOVER_HOLD_HOURS: '1.5' }), 'CUTOVER_HOLD_HOURS:');
  t.match(errorOf({ NODE_ENV: 'staging' }), 'NODE_ENV:');
  t.match(errorOf({ VA_NOTIFY_TEMPLATE_ID: 'not-a-uuid' }), 'VA_NOTIFY_TEMPLATE_ID:');
  t.match(errorOf({ VA_NOTIFY_BASE_URL: 'api.notifications.va.gov' }), 'VA_NOTIFY_BASE_URL:');
  const both = errorOf({ PORT: 'x', GROUPING_QUIET_MINUTES: 'y' });
  t.match(both, 'PORT:');
  t.match(both, 'GROUPING_QUIET_MINUTES:', 'every bad value at once, not one per restart');
});

t.test('a renamed setting is refused by its old name, naming the new one', async (t) => {
  t.equal(
    errorOf({ RETENTION_YIELD_CALLBACKS_PER_SECOND: '0' }),
    'invalid configuration: RETENTION_YIELD_CALLBACKS_PER_SECOND: renamed RETENTION_YIELD_ROWS_PER_SECOND (its meaning widened); set that instead',
  );
});

t.test('VA Notify keys: a bare secret with a service id, or one combined key', async (t) => {
  t.same(vaNotifyCredentials({ VA_NOTIFY_API_KEY: secret, VA_NOTIFY_SERVICE_ID: serviceId }), { serviceId, secret });
  const combined = `rx-tracking-prod-${serviceId}-${secret}`;
  t.ok(isCombinedApiKey(combined));
  t.same(vaNotifyCredentials({ VA_NOTIFY_API_KEY: combined, VA_NOTIFY_SERVICE_ID: undefined }), { serviceId, secret });
  t.same(
    vaNotifyCredentials({ VA_NOTIFY_API_KEY: `key-with-dashes-in-its-name-${serviceId}-${secret}`, VA_NOTIFY_SERVICE_ID: undefined }),
    { serviceId, secret },
    'dashes in the key name',
  );
  const urlSafe = `${'a'.repeat(43)}-_${'B'.repeat(41)}`;
  t.equal(urlSafe.length, 86);
  t.notOk(isCombinedApiKey(urlSafe), 'an 86-character url-safe secret is a bare secret');
  t.same(vaNotifyCredentials({ VA_NOTIFY_API_KEY: urlSafe, VA_NOTIFY_SERVICE_ID: serviceId }), { serviceId, secret: urlSafe });
  t.notOk(isCombinedApiKey(secret), 'a bare UUID secret');
  t.notOk(isCombinedApiKey(undefined));

  const config = loadConfig({
    ...base,
    VA_NOTIFY_BASE_URL: 'https://staging.api.notifications.va.gov',
    VA_NOTIFY_API_KEY: combined,
    VA_NOTIFY_TEMPLATE_ID: templateId,
    VA_NOTIFY_CALLBACK_TOKENS: 'callback-token-0001',
  });
  t.same(vaNotifyCredentials(config), { serviceId, secret }, 'a combined key needs no VA_NOTIFY_SERVICE_ID');
});

t.test('callback signatures: the current key and every previous key, in either form', async (t) => {
  const previous = '8e7d6c5b-4a39-4281-9f0e-1d2c3b4a5968';
  const config = loadConfig({
    ...base,
    VA_NOTIFY_API_KEY: `rx-tracking-${serviceId}-${secret}`,
    VA_NOTIFY_PREVIOUS_API_KEYS: `old-${serviceId}-${previous}, ${'c'.repeat(86)}`,
  });
  t.same(vaNotifySigningSecrets(config), [secret, previous, 'c'.repeat(86)]);
  t.same(vaNotifySigningSecrets(loadConfig(base)), [], 'none configured: none accepted');
});

t.test('TRUST_PROXY: addresses, CIDR ranges and the named ranges; anything else names itself', async (t) => {
  t.same(loadConfig(base).TRUST_PROXY, ['none'], 'no proxy is trusted unless one is named');
  t.same(loadConfig({ ...base, TRUST_PROXY: '10.0.0.0/16, 192.0.2.10, fd00::/8, linklocal' }).TRUST_PROXY, [
    '10.0.0.0/16',
    '192.0.2.10',
    'fd00::/8',
    'linklocal',
  ]);
  t.same(loadConfig({ ...base, TRUST_PROXY: 'none' }).TRUST_PROXY, ['none']);
  t.match(errorOf({ TRUST_PROXY: 'none,loopback' }), 'TRUST_PROXY: none trusts no proxy, so it stands alone');
  t.match(
    errorOf({ TRUST_PROXY: '10.0.0.0/33,alb.internal,10.1.2' }),
    'TRUST_PROXY: not an address, a CIDR range or loopback/linklocal/uniquelocal: 10.0.0.0/33, alb.internal, 10.1.2',
  );
});

t.test('a send lease must outlast a VA Notify request with room to spare', async (t) => {
  t.match(
    errorOf({ SEND_LEASE_SECONDS: '15', VA_NOTIFY_TIMEOUT_MS: '10000' }),
    'SEND_LEASE_SECONDS: must be at least twice VA_NOTIFY_TIMEOUT_MS',
  );
  t.equal(loadConfig({ ...base, SEND_LEASE_SECONDS: '20', VA_NOTIFY_TIMEOUT_MS: '10000' }).SEND_LEASE_SECONDS, 20);
});

t.test('VA_NOTIFY_BASE_URL set requires the rest of the VA Notify settings', async (t) => {
  const url = { VA_NOTIFY_BASE_URL: 'https://staging.api.notifications.va.gov' };
  const message = errorOf(url);
  t.match(message, 'VA_NOTIFY_API_KEY: required when VA_NOTIFY_BASE_URL is set');
  t.match(message, 'VA_NOTIFY_TEMPLATE_ID: required when VA_NOTIFY_BASE_URL is set');
  t.match(message, 'VA_NOTIFY_SERVICE_ID: required when VA_NOTIFY_BASE_URL is set and VA_NOTIFY_API_KEY is a bare secret');
  t.match(message, 'VA_NOTIFY_CALLBACK_TOKENS: required when VA_NOTIFY_BASE_URL is set');

  const complete = {
    ...base,
    ...url,
    VA_NOTIFY_API_KEY: secret,
    VA_NOTIFY_SERVICE_ID: serviceId,
    VA_NOTIFY_TEMPLATE_ID: templateId,
    VA_NOTIFY_CALLBACK_TOKENS: 'callback-token-0001',
  };
  t.equal(loadConfig(complete).VA_NOTIFY_BASE_URL, url.VA_NOTIFY_BASE_URL);
  t.match(
    configError(() => loadConfig({ ...complete, VA_NOTIFY_SERVICE_ID: undefined })),
    'VA_NOTIFY_SERVICE_ID: required',
  );
  t.ok(
    loadConfig({
      ...complete,
      VA_NOTIFY_CALLBACK_TOKENS: undefined,
      VA_NOTIFY_CALLBACK_URL: 'https://rx.example.va.gov/v1/va-notify/callbacks',
    }),
    'per-notification callbacks need no token',
  );
  t.match(
    configError(() => loadConfig({ ...complete, VA_NOTIFY_CALLBACK_TOKENS: 'short' })),
    'VA_NOTIFY_CALLBACK_TOKENS: each token needs at least 10 characters',
  );
});

t.test('production with DELIVERY_MODE=live needs real VA Notify, AAL and a database', async (t) => {
  const message = errorOf({ NODE_ENV: 'production' });
  t.match(message, 'VA_NOTIFY_BASE_URL: required in production with DELIVERY_MODE=live');
  t.match(message, 'AAL_BASE_URL: required in production with DELIVERY_MODE=live');
  t.match(message, 'DATABASE_URL: required in production');
  const shadow = errorOf({ NODE_ENV: 'production', DELIVERY_MODE: 'shadow' });
  t.notMatch(shadow, 'VA_NOTIFY_BASE_URL', 'a shadow run calls nobody');
  t.match(shadow, 'DATABASE_URL: required in production');
  t.match(errorOf({ AAL_BASE_URL: 'https://apigw.myhealth.va.gov' }), 'AAL_APP_TOKEN: required when AAL_BASE_URL is set');
});

t.test('production with DELIVERY_MODE=live needs the cut-over instant', async (t) => {
  t.equal(
    configError(() => loadConfig(liveProduction)),
    'invalid configuration: DELIVERY_START_AT: required in production with DELIVERY_MODE=live (the cut-over instant; without it every package MHV emails is emailed again)',
  );
  const config = loadConfig({ ...liveProduction, DELIVERY_START_AT: '2026-06-02T14:00:00Z' });
  t.same(config.DELIVERY_START_AT, new Date('2026-06-02T14:00:00Z'));
  t.equal(config.CUTOVER_HOLD_HOURS, 12, 'packages near the instant are held by default');
  t.ok(loadConfig({ ...liveProduction, DELIVERY_MODE: 'shadow' }), 'a shadow run needs no instant: it sends nothing');
});

t.test('testConfig gives a quiet, timer-free config for tests', async (t) => {
  const config = testConfig({ GROUPING_QUIET_MINUTES: '0' });
  t.equal(config.NODE_ENV, 'test');
  t.equal(config.JOBS_ENABLED, false);
  t.equal(config.LOG_LEVEL, 'silent');
  t.equal(config.GROUPING_QUIET_MINUTES, 0);
});

t.test('the server refuses to start live in production without DELIVERY_START_AT (exit 78)', async (t) => {
  const { code, stderr } = await runScript('src/server.ts', [], { ...liveProduction, DATABASE_URL: 'postgres://rx@127.0.0.1:1/rx' });
  t.equal(code, 78, 'EX_CONFIG');
  t.match(stderr, 'DELIVERY_START_AT: required in production with DELIVERY_MODE=live');
});
