// The event-bus settings: off unless EVENT_BUS_BROKERS is set; when set, checked at startup like
// every other setting, naming the variable (the server exits 78).
import t from 'tap';
import { eventBusTls, loadConfig, testConfig } from '../../src/config.ts';
import { runScript } from '../support/cli.ts';
import { configError } from '../support/config-error.ts';

const on = { EVENT_BUS_BROKERS: 'b-1.msk.example:9098,b-2.msk.example:9098', EVENT_BUS_SCHEMA_REGISTRY_URL: 'https://registry.example' };

t.test('no brokers, no consumer; defaults for the rest', async (t) => {
  const config = testConfig();
  t.same(config.EVENT_BUS_BROKERS, []);
  t.equal(config.EVENT_BUS_TOPIC, 'cmop_medication_dispense');
  t.equal(config.EVENT_BUS_GROUP_ID, 'rx-tracking-email');
  t.equal(config.EVENT_BUS_AUTH, 'msk-iam');
  t.equal(config.EVENT_BUS_AWS_REGION, 'us-gov-west-1');
  t.same(testConfig(on).EVENT_BUS_BROKERS, ['b-1.msk.example:9098', 'b-2.msk.example:9098']);
});

t.test('TLS is on by default outside development, and never off in production', async (t) => {
  t.equal(eventBusTls(testConfig(on)), true, 'test');
  t.equal(eventBusTls(loadConfig({ NODE_ENV: 'development', ...on })), false, 'development');
  t.equal(eventBusTls(testConfig({ ...on, EVENT_BUS_TLS: 'false' })), false);
  t.match(
    configError(() => loadConfig({ ...production, ...on, EVENT_BUS_TLS: 'false' })),
    'EVENT_BUS_TLS: must stay on in production',
  );
});

const production = {
  NODE_ENV: 'production',
  INTERNAL_API_TOKENS: 'internal-token-000000001',
  DATABASE_URL: 'postgres://db/rx',
  DELIVERY_MODE: 'off',
  AAL_BASE_URL: 'https://aal.example',
  AAL_APP_TOKEN: 'x',
  AAL_API_KEY: 'y',
};

t.test('a bad or missing setting names its variable', async (t) => {
  t.match(
    configError(() => testConfig({ EVENT_BUS_BROKERS: 'b-1.msk.example' })),
    'EVENT_BUS_BROKERS: not host:port: b-1.msk.example',
  );
  t.match(
    configError(() => testConfig({ EVENT_BUS_BROKERS: 'b-1:9098' })),
    'EVENT_BUS_SCHEMA_REGISTRY_URL: required when EVENT_BUS_BROKERS is set',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_AUTH: 'plain' })),
    'EVENT_BUS_AUTH',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_AUTH: 'scram-sha-512' })),
    'EVENT_BUS_SCRAM_USERNAME: required when EVENT_BUS_AUTH=scram-sha-512',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_AUTH: 'scram-sha-512', EVENT_BUS_SCRAM_USERNAME: 'rx' })),
    'EVENT_BUS_SCRAM_PASSWORD: required',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_AWS_ROLE_ARN: 'my-role' })),
    'EVENT_BUS_AWS_ROLE_ARN',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_AWS_REGION: 'Mars' })),
    'EVENT_BUS_AWS_REGION',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_TOPIC: 'bad topic' })),
    'EVENT_BUS_TOPIC',
  );
  t.match(
    configError(() => testConfig({ ...on, EVENT_BUS_BATCH_SIZE: '0' })),
    'EVENT_BUS_BATCH_SIZE',
  );
  t.match(
    configError(() => loadConfig({ ...production, ...on, EVENT_BUS_AUTH: 'none' })),
    'EVENT_BUS_AUTH: none is for a local broker',
  );
  t.ok(loadConfig({ ...production, ...on, EVENT_BUS_AWS_ROLE_ARN: 'arn:aws-us-gov:iam::123456789012:role/rx-tracking-email' }));
});

t.test('the server exits 78 naming the variable', async (t) => {
  const { code, stderr } = await runScript('src/server.ts', [], {
    NODE_ENV: 'test',
    INTERNAL_API_TOKENS: 'test-internal-token-0001',
    EVENT_BUS_BROKERS: 'b-1:9098',
  });
  t.equal(code, 78, 'EX_CONFIG');
  t.match(stderr, 'EVENT_BUS_SCHEMA_REGISTRY_URL: required when EVENT_BUS_BROKERS is set');
});
