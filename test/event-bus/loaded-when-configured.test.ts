// The event-bus consumer, with the Kafka client and the MSK token signer it brings, is loaded only
// by a service configured for the Event Bus: elsewhere it would add about 10 MB to the app's heap,
// which every full collection marks again (and longer pauses for the callbacks in flight). The consumer itself,
// loaded when configured, is what test/event-bus/ingest.test.ts runs against a real broker.
import { registerHooks } from 'node:module';
import t from 'tap';

const loaded: string[] = [];
registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    loaded.push(resolved.url);
    return resolved;
  },
});
// Imported after the hook is in place, so that every module the app loads passes through it.
const { testApp } = await import('../support/app.ts');

t.test('a service without EVENT_BUS_BROKERS never loads the consumer or the Kafka client', async (t) => {
  const { app } = await testApp(t);
  t.equal(app.eventBus, undefined, 'no consumer');
  t.ok(
    loaded.some((url) => url.endsWith('/src/app.ts')),
    'the hook saw the app load',
  );
  t.same(
    loaded.filter((url) => /\/src\/event-bus\/|@platformatic\/kafka|aws-msk-iam-sasl-signer-js/.test(url)),
    [],
    'none of the event-bus modules',
  );
});
