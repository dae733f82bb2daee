// npm run event-bus:publish -- <file>...: publishes CMOP sample files (HL7 or JSON) to the event-bus
// topic as Avro records, registering the schema first, so that a developer can watch a record go
// through the consumer to an email. Reads the same EVENT_BUS_* settings as the service.
import { type Config, ConfigError, eventBusTls, loadConfig } from '../config.ts';
import { saslOptions } from './consumer.ts';
import { createPublisher, eventsOfFile } from './publish.ts';

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: npm run event-bus:publish -- <file.hl7|file.json>...\n');
  process.exit(64);
}
let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(78);
}
if (config.EVENT_BUS_BROKERS.length === 0 || config.EVENT_BUS_SCHEMA_REGISTRY_URL === undefined) {
  process.stderr.write(
    'EVENT_BUS_BROKERS and EVENT_BUS_SCHEMA_REGISTRY_URL must be set (npm run event-bus:broker prints them for a local broker)\n',
  );
  process.exit(78);
}
const publisher = await createPublisher({
  brokers: config.EVENT_BUS_BROKERS,
  registryUrl: config.EVENT_BUS_SCHEMA_REGISTRY_URL,
  topic: config.EVENT_BUS_TOPIC,
  sasl: saslOptions(config),
  tls: eventBusTls(config),
});
try {
  for (const file of files) {
    const events = eventsOfFile(file);
    await publisher.publish(events);
    process.stdout.write(
      `${file}: ${events.length} record${events.length === 1 ? '' : 's'} published to ${config.EVENT_BUS_TOPIC} (schema id ${publisher.schemaId})\n`,
    );
  }
} finally {
  await publisher.close();
}
