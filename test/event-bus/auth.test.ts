// Authentication to the brokers: OAUTHBEARER (the MSK IAM path) against a real broker with Kafka's
// unsecured test tokens, re-authenticating as sessions expire; SCRAM-SHA-512; the MSK IAM token.
import t from 'tap';
import { mskIamTokenProvider, TokenRefreshMarginMs } from '../../src/event-bus/auth.ts';
import { createPublisher } from '../../src/event-bus/publish.ts';
import { testApp } from '../support/app.ts';
import { countOf, createTopic, eventBusSettings, kafkaSkip, testBroker, testRegistry, uniqueName } from '../support/kafka.ts';
import { waitFor } from '../support/wait.ts';

t.setTimeout(300_000);

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Kafka's unsecured JWS (alg none), accepted by OAuthBearerUnsecuredValidatorCallbackHandler until exp. */
function unsecuredToken(subject: string, lifetimeMs: number): string {
  const now = Date.now() / 1000;
  return `${base64url({ alg: 'none' })}.${base64url({ sub: subject, iat: now, exp: now + lifetimeMs / 1000 })}.`;
}

const event = (n: number) => ({
  eventId: `auth-${n}`,
  dispense: {
    stationNumber: '521',
    patient: { icn: '1012345678V123456' },
    prescription: { rxNumber: `99${String(n).padStart(5, '0')}`, fillNumber: 0 },
    carrier: 'UPS',
    trackingNumber: `1Z99999905${String(n).padStart(8, '0')}`,
  },
});

t.test('OAUTHBEARER authenticates against the broker and re-authenticates as each session expires', { skip: kafkaSkip }, async (t) => {
  // Sessions on the SASL listener last at most 3 s: a client that does not re-authenticate in time
  // is disconnected by the broker.
  const broker = await testBroker({ maxReauthMs: 3000 });
  const registry = await testRegistry(t);
  const topic = uniqueName('dispenses');
  await createTopic(broker.plaintext, topic, 1);
  let tokens = 0;
  let refused = 0;
  let disconnects = 0;
  const { app, db } = await testApp(
    t,
    { ...eventBusSettings(broker.sasl, registry, topic, uniqueName('group')), EVENT_BUS_AUTH: 'msk-iam' },
    {
      eventBus: {
        tokenProvider: async () => {
          tokens++;
          return unsecuredToken('rx-tracking-email', 10_000);
        },
        onClient: (client) => {
          client.on('client:broker:disconnect', () => disconnects++);
          client.on('client:broker:failed', () => refused++);
        },
      },
    },
  );
  const publisher = await createPublisher({ brokers: [broker.plaintext], registryUrl: registry.url, topic });
  t.teardown(() => publisher.close());
  await publisher.publish([event(1)]);
  await waitFor('the first record stored', async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 1);
  t.equal(app.eventBus!.status(), 'ok');
  const before = tokens;
  const disconnectsBefore = disconnects;
  await new Promise((resolve) => setTimeout(resolve, 7000));
  t.ok(tokens >= before + 2, `a new token asked for at each re-authentication (${before} then ${tokens})`);
  t.equal(disconnects, disconnectsBefore, 'no connection was closed for an expired session');
  await publisher.publish([event(2)]);
  await waitFor(
    'a record after re-authentication stored',
    async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 2,
  );
  t.equal(refused, 0, 'never refused');
});

t.test('an expired token is refused by the broker, and the consumer says it lost its broker', { skip: kafkaSkip }, async (t) => {
  const broker = await testBroker({ maxReauthMs: 3000 });
  const registry = await testRegistry(t);
  const topic = uniqueName('dispenses');
  const { app } = await testApp(
    t,
    { ...eventBusSettings(broker.sasl, registry, topic, uniqueName('group')), EVENT_BUS_AUTH: 'msk-iam' },
    {
      eventBus: { tokenProvider: async () => unsecuredToken('rx-tracking-email', -60_000) },
    },
  );
  await waitFor('reported', () => app.eventBus!.status() === 'broker unreachable', 30_000);
  const ready = await app.inject({ method: 'GET', url: '/health/ready' });
  t.equal(ready.statusCode, 503);
});

t.test('SCRAM-SHA-512 authenticates with the user and password given', { skip: kafkaSkip }, async (t) => {
  const broker = await testBroker({ maxReauthMs: 3000 });
  const registry = await testRegistry(t);
  const topic = uniqueName('dispenses');
  await createTopic(broker.plaintext, topic, 1);
  const { db } = await testApp(t, {
    ...eventBusSettings(broker.sasl, registry, topic, uniqueName('group')),
    EVENT_BUS_AUTH: 'scram-sha-512',
    EVENT_BUS_SCRAM_USERNAME: broker.scram.username,
    EVENT_BUS_SCRAM_PASSWORD: broker.scram.password,
  });
  const publisher = await createPublisher({ brokers: [broker.plaintext], registryUrl: registry.url, topic });
  t.teardown(() => publisher.close());
  await publisher.publish([event(3)]);
  await waitFor('stored', async () => (await countOf(db.sql, 'select count(*)::int as n from medication_dispense')) === 1);
  t.pass('consumed over SCRAM-SHA-512');
});

t.test('the MSK IAM token is a presigned kafka-cluster:Connect URL, reused until a minute before it expires', async (t) => {
  const saved = { ...process.env };
  t.teardown(() => {
    process.env = saved;
  });
  // Static credentials: the signer presigns locally, with no call to AWS.
  process.env.AWS_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE';
  process.env.AWS_SECRET_ACCESS_KEY = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  delete process.env.AWS_PROFILE;
  let now = Date.now();
  const provider = mskIamTokenProvider({ region: 'us-gov-west-1' }, () => now);
  const first = await provider();
  const url = new URL(Buffer.from(first, 'base64url').toString('utf8'));
  t.equal(url.host, 'kafka.us-gov-west-1.amazonaws.com');
  t.equal(url.searchParams.get('Action'), 'kafka-cluster:Connect');
  t.equal(url.searchParams.get('X-Amz-Expires'), '900', 'valid 15 minutes');
  await new Promise((resolve) => setTimeout(resolve, 1100));
  t.equal(await provider(), first, 'reused while it has more than a minute left');
  now += 900_000 - TokenRefreshMarginMs + 1000;
  t.not(await provider(), first, 'a new one in its last minute');
});
