// A throwaway single-node Apache Kafka broker (KRaft: broker and controller in one JVM) from the
// Maven Central jars that scripts/kafka.sh fetches into .cache/kafka, for tests, benchmarks and
// development (`npm run event-bus:broker`). Never used in production: there the service connects to
// the VA Enterprise Event Bus (AWS MSK).
//
// Listeners, all on loopback ports picked free at start:
//   PLAINTEXT  no authentication
//   SASL       SASL_PLAINTEXT with OAUTHBEARER (Kafka's unsecured JWS tokens, test-only) and
//              SCRAM-SHA-512 (one user, added when the storage is formatted)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const script = join(root, 'scripts/kafka.sh');
/** The java binary: JAVA names another (a test run can name a missing one to see the Kafka tests skip). */
const java = process.env.JAVA ?? 'java';

export interface KafkaBroker {
  /** host:port of the PLAINTEXT listener. */
  plaintext: string;
  /** host:port of the SASL_PLAINTEXT listener (OAUTHBEARER and SCRAM-SHA-512). */
  sasl: string;
  scram: { username: string; password: string };
  /** Stops the broker (SIGKILL after a few seconds) and deletes its storage. */
  stop(): Promise<void>;
  /** The JVM, for a test that needs to kill it. */
  readonly process: ChildProcess;
  /** Starts the broker again, on the same ports and with the same storage, once it was stopped or killed. */
  restart(): Promise<void>;
}

export interface KafkaBrokerOptions {
  /** Partitions of an auto-created topic. */
  partitions?: number;
  /** connections.max.reauth.ms of the SASL listener: sessions end this soon unless re-authenticated. */
  maxReauthMs?: number;
  /** JVM heap, e.g. '256m'. */
  heap?: string;
  log?: (line: string) => void;
}

/** Whether a broker can run here: a JVM, and the jars or mvn to fetch them (tests skip otherwise). */
export function kafkaRunnable(): boolean {
  return spawnSync('bash', [script, 'ready'], { stdio: 'ignore', env: { ...process.env, JAVA: java } }).status === 0;
}

/** The broker's classpath, fetching the jars first if needed (mvn; about a minute the first time). */
export function kafkaClasspath(): string {
  const result = spawnSync('bash', [script, 'classpath'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (result.status !== 0) throw new Error(`scripts/kafka.sh classpath failed (exit ${result.status})`);
  return result.stdout.trim();
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

const BindAttempts = 3;

/**
 * Starts a broker on free loopback ports. A port found free can be taken by another process before
 * the broker binds it (tests start brokers and servers side by side): the broker then exits, and
 * another set of ports is tried.
 */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnFreePorts(options);
    } catch (error) {
      if (attempt >= BindAttempts || !/Address already in use/.test((error as Error).message)) throw error;
      options.log?.(`a port was taken before the broker bound it; starting again on other ports (attempt ${attempt + 1})\n`);
    }
  }
}

async function startOnFreePorts(options: KafkaBrokerOptions): Promise<KafkaBroker> {
  const classpath = kafkaClasspath();
  const [plainPort, saslPort, controllerPort] = [await freePort(), await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'rx-kafka-'));
  const scram = { username: 'rx-consumer', password: 'rx-consumer-secret' };
  const properties = join(dir, 'server.properties');
  writeFileSync(
    properties,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${plainPort},SASL://127.0.0.1:${saslPort},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${plainPort},SASL://127.0.0.1:${saslPort}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT',
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      `num.partitions=${options.partitions ?? 1}`,
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'group.consumer.min.session.timeout.ms=1000',
      'group.min.session.timeout.ms=1000',
      'auto.create.topics.enable=true',
      'log.flush.interval.messages=1000000',
      'listener.name.sasl.sasl.enabled.mechanisms=OAUTHBEARER,SCRAM-SHA-512',
      // Kafka's unsecured JWS validator: any well-formed unsigned token with sub, iat and exp is
      // accepted until its exp. For tests only.
      'listener.name.sasl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler',
      'listener.name.sasl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";',
      'listener.name.sasl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
      ...(options.maxReauthMs === undefined ? [] : [`listener.name.sasl.connections.max.reauth.ms=${options.maxReauthMs}`]),
      '',
    ].join('\n'),
  );
  // Kafka's slf4j binding here is reload4j (log4j 1 syntax): warnings, and the line saying it started.
  writeFileSync(
    join(dir, 'log4j.properties'),
    [
      'log4j.rootLogger=WARN, stdout',
      'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
      'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka.server.KafkaRaftServer=INFO',
      '',
    ].join('\n'),
  );
  const jvm = [
    `-Xmx${options.heap ?? '256m'}`,
    `-Xms${options.heap ?? '256m'}`,
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Xss512k',
    '-Djava.awt.headless=true',
    `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`,
    '-cp',
    classpath,
  ];
  const format = spawnSync(
    java,
    [
      ...jvm.filter((a) => !a.startsWith('-Xms')),
      'kafka.tools.StorageTool',
      'format',
      '--standalone',
      '-t',
      randomUUID().replaceAll('-', '').slice(0, 22),
      '-c',
      properties,
      '--add-scram',
      `SCRAM-SHA-512=[name=${scram.username},password=${scram.password}]`,
    ],
    { encoding: 'utf8' },
  );
  if (format.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`formatting the Kafka storage failed: ${format.stderr}${format.stdout}`);
  }
  let child!: ChildProcess;
  let exited!: Promise<void>;
  let output = '';
  const launch = async () => {
    output = '';
    child = spawn(java, [...jvm, 'kafka.Kafka', properties], { stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      output = (output + text).slice(-20_000);
      options.log?.(text);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    const started = child;
    exited = new Promise<void>((resolveExit) => started.once('exit', () => resolveExit()));
    // Seconds on an idle machine; minutes on two cores shared with other work.
    await waitForStart(() => output, child, 300_000);
  };
  const halt = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  const stop = async () => {
    await halt();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    plaintext: `127.0.0.1:${plainPort}`,
    sasl: `127.0.0.1:${saslPort}`,
    scram,
    stop,
    get process() {
      return child;
    },
    async restart() {
      await halt();
      await launch();
    },
  };
}

async function waitForStart(output: () => string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (/Kafka Server started|KafkaRaftServer.*started/i.test(output())) return;
    if (child.exitCode !== null) throw new Error(`the Kafka broker exited (${child.exitCode}): ${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the Kafka broker did not start within ${timeoutMs / 1000} s: ${output()}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // npm run event-bus:broker: a broker and a schema registry for development, until Ctrl-C.
  const { startSandboxSchemaRegistry } = await import('./schema-registry.ts');
  const broker = await startKafkaBroker({ partitions: Number(process.env.PARTITIONS ?? 3), log: (line) => process.stderr.write(line) });
  const registry = await startSandboxSchemaRegistry();
  process.stdout.write(
    [
      `Kafka broker: PLAINTEXT ${broker.plaintext}; SASL ${broker.sasl} (SCRAM-SHA-512 ${broker.scram.username}/${broker.scram.password}, or OAUTHBEARER unsecured test tokens)`,
      `Schema registry: ${registry.url}`,
      'Run the service and the publisher with:',
      `  EVENT_BUS_BROKERS=${broker.plaintext} EVENT_BUS_SCHEMA_REGISTRY_URL=${registry.url} EVENT_BUS_AUTH=none EVENT_BUS_TLS=false`,
      '',
    ].join('\n'),
  );
  const shutdown = () => void Promise.all([broker.stop(), registry.close()]).then(() => process.exit(0));
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}
