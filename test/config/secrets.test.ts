// Secrets reach the container either as environment variables (ECS `secrets`) or as files named by
// <NAME>_FILE (Secrets Store CSI driver). Both must work, a broken secret must stop startup with a
// message naming the variable, and no message may ever contain a secret's value.
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runScript, tempDir } from '../support/cli.ts';
import { configError } from '../support/config-error.ts';
import { loadConfig, SecretNames } from '../../src/config.ts';

function secretsDir(t: { teardown(fn: () => unknown): void }): (name: string, content: string) => string {
  const dir = tempDir(t, 'rx-secrets-');
  return (name, content) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
}

/** A value each secret accepts, and what the config holds for it. */
const samples: Record<(typeof SecretNames)[number], { value: string; expected: unknown }> = {
  VA_NOTIFY_API_KEY: { value: 'rx-tracking-key-0123456789abcdef', expected: 'rx-tracking-key-0123456789abcdef' },
  VA_NOTIFY_CALLBACK_TOKENS: {
    value: 'callback-token-current,callback-token-next',
    expected: ['callback-token-current', 'callback-token-next'],
  },
  VA_NOTIFY_PREVIOUS_API_KEYS: { value: 'rx-tracking-key-retired-0123456789', expected: ['rx-tracking-key-retired-0123456789'] },
  INTERNAL_API_TOKENS: { value: 'internal-token-0000000001', expected: ['internal-token-0000000001'] },
  AAL_APP_TOKEN: { value: 'mhv-app-token-value', expected: 'mhv-app-token-value' },
  AAL_API_KEY: { value: 'mhv-gateway-api-key', expected: 'mhv-gateway-api-key' },
  DATABASE_URL: { value: 'postgres://rx:s3cret-pw@db.internal:5432/rx', expected: 'postgres://rx:s3cret-pw@db.internal:5432/rx' },
  EVENT_BUS_SCRAM_USERNAME: { value: 'rx-tracking-consumer', expected: 'rx-tracking-consumer' },
  EVENT_BUS_SCRAM_PASSWORD: { value: 'scram-password-value', expected: 'scram-password-value' },
};

const base = { NODE_ENV: 'test', INTERNAL_API_TOKENS: 'test-internal-token-0001' };

t.test('every secret can come from a file; the trailing newline is trimmed', async (t) => {
  const file = secretsDir(t);
  for (const name of SecretNames) {
    const env: Record<string, string | undefined> = { ...base, [`${name}_FILE`]: file(name, `${samples[name].value}\n`) };
    if (name === 'INTERNAL_API_TOKENS') delete env.INTERNAL_API_TOKENS;
    const config = loadConfig(env);
    t.same(config[name], samples[name].expected, name);
  }
});

t.test('a production configuration with every secret from a file', async (t) => {
  const file = secretsDir(t);
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    VA_NOTIFY_BASE_URL: 'https://api.notifications.va.gov',
    VA_NOTIFY_SERVICE_ID: '6c7d9d2e-7a1b-4c55-9a0e-3f1d2c4b5a69',
    VA_NOTIFY_TEMPLATE_ID: '0f7a2c3d-1e2f-4a5b-8c9d-0e1f2a3b4c5d',
    AAL_BASE_URL: 'https://apigw.myhealth.va.gov',
    DELIVERY_START_AT: '2026-06-02T14:00:00Z',
  };
  for (const name of SecretNames) env[`${name}_FILE`] = file(name, `${samples[name].value}\r\n`);
  const config = loadConfig(env);
  for (const name of SecretNames) t.same(config[name], samples[name].expected, name);
});

t.test('a token list file may hold one token per line', async (t) => {
  const file = secretsDir(t);
  const config = loadConfig({ ...base, VA_NOTIFY_CALLBACK_TOKENS_FILE: file('tokens', 'callback-token-current\ncallback-token-next\n') });
  t.same(config.VA_NOTIFY_CALLBACK_TOKENS, ['callback-token-current', 'callback-token-next']);
});

t.test('a missing, unreadable or empty file stops startup naming the variable', async (t) => {
  const file = secretsDir(t);
  const missing = join(tmpdir(), 'rx-secrets-does-not-exist', 'key');
  for (const name of SecretNames) {
    const env = {
      NODE_ENV: 'test',
      ...(name === 'INTERNAL_API_TOKENS' ? {} : { INTERNAL_API_TOKENS: base.INTERNAL_API_TOKENS }),
      [`${name}_FILE`]: missing,
    };
    t.equal(
      configError(() => loadConfig(env)),
      `${name}_FILE: cannot read ${missing} (ENOENT)`,
      name,
    );
  }
  const directory = join(file('x', ''), '..', 'a-directory');
  mkdirSync(directory);
  t.equal(
    configError(() => loadConfig({ ...base, VA_NOTIFY_API_KEY_FILE: directory })),
    `VA_NOTIFY_API_KEY_FILE: cannot read ${directory} (EISDIR)`,
  );
  const empty = file('empty', '\n');
  t.equal(
    configError(() => loadConfig({ ...base, DATABASE_URL_FILE: empty })),
    `DATABASE_URL_FILE: ${empty} is empty`,
  );
  // In development an empty token file would otherwise fall back to the development token.
  t.equal(
    configError(() => loadConfig({ NODE_ENV: 'development', INTERNAL_API_TOKENS_FILE: empty })),
    `INTERNAL_API_TOKENS_FILE: ${empty} is empty`,
  );
});

t.test('the server exits non-zero naming VA_NOTIFY_API_KEY_FILE when the file is missing', async (t) => {
  const missing = join(tmpdir(), 'rx-secrets-does-not-exist', 'va-notify-api-key');
  const { code, stderr } = await runScript('src/server.ts', [], { NODE_ENV: 'production', VA_NOTIFY_API_KEY_FILE: missing });
  t.not(code, 0);
  t.equal(code, 78, 'EX_CONFIG');
  t.match(stderr, `VA_NOTIFY_API_KEY_FILE: cannot read ${missing} (ENOENT)`);
});

t.test('NAME and NAME_FILE together are an error', async (t) => {
  const file = secretsDir(t);
  for (const name of SecretNames) {
    const message = configError(() =>
      loadConfig({ ...base, [name]: samples[name].value, [`${name}_FILE`]: file(name, samples[name].value) }),
    );
    t.equal(message, `${name} and ${name}_FILE are both set; set only one`);
    t.notOk(message.includes(samples[name].value));
  }
});

t.test('a _FILE for a setting that is not a secret is refused, not ignored', async (t) => {
  const file = secretsDir(t);
  t.match(
    configError(() => loadConfig({ ...base, VA_NOTIFY_TEMPLATE_ID_FILE: file('template', 'x') })),
    /^VA_NOTIFY_TEMPLATE_ID_FILE: VA_NOTIFY_TEMPLATE_ID is not read from a file/,
  );
});

t.test("a bad secret's error names it and never contains its value", async (t) => {
  const file = secretsDir(t);
  const bad: [string, string][] = [
    ['DATABASE_URL', 'mysql://rx:hunter2-secret@db.internal/rx'],
    ['VA_NOTIFY_API_KEY', 'Sh0rtK3y'],
    ['INTERNAL_API_TOKENS', 'tooShortTok9'],
    ['VA_NOTIFY_CALLBACK_TOKENS', 'good-callback-token,cbShort7'],
  ];
  for (const [name, value] of bad) {
    for (const via of ['env', 'file'] as const) {
      const env: Record<string, string | undefined> = {
        ...base,
        ...(via === 'env' ? { [name]: value } : { [`${name}_FILE`]: file(name, value) }),
      };
      if (name === 'INTERNAL_API_TOKENS') delete env.INTERNAL_API_TOKENS;
      const message = configError(() => loadConfig(env));
      t.match(message, `${name}:`, `${name} via ${via}: named`);
      for (const part of value.split(',')) t.notOk(message.includes(part), `${name} via ${via}: value not shown`);
    }
  }
  // A VA Notify key missing its companions: the message names what is missing, not the key.
  const key = 'rx-tracking-key-0123456789abcdef';
  const message = configError(() =>
    loadConfig({ ...base, VA_NOTIFY_BASE_URL: 'https://staging.api.notifications.va.gov', VA_NOTIFY_API_KEY: key }),
  );
  t.match(message, 'VA_NOTIFY_TEMPLATE_ID: required when VA_NOTIFY_BASE_URL is set');
  t.notOk(message.includes(key));
});

t.test('INTERNAL_API_TOKENS is required outside development', async (t) => {
  for (const NODE_ENV of ['test', 'production']) {
    t.match(
      configError(() => loadConfig({ NODE_ENV })),
      'INTERNAL_API_TOKENS: required outside development',
      NODE_ENV,
    );
  }
  t.same(loadConfig({ NODE_ENV: 'development' }).INTERNAL_API_TOKENS, ['local-dev-internal-token'], 'development has a default');
  t.same(loadConfig({}).INTERNAL_API_TOKENS, ['local-dev-internal-token'], 'development is the default environment');
  t.match(
    configError(() => loadConfig({ NODE_ENV: 'test', INTERNAL_API_TOKENS: ' , ' })),
    'INTERNAL_API_TOKENS: required outside development',
    'blank items do not count',
  );
});
