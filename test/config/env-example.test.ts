// .env.example lists every setting of the config schema with its default; `npm run env-example`
// writes it, and this fails when the file and the schema differ.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { envExample } from '../../scripts/env-example.ts';
import { ConfigSchema, loadConfig } from '../../src/config.ts';

const committed = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');

t.test('.env.example is the one the config schema generates (npm run env-example writes it)', async (t) => {
  t.equal(committed, envExample(), '.env.example differs from src/config.ts: run npm run env-example');
});

t.test('it names every setting, and its values, uncommented, are a valid configuration', async (t) => {
  const settings = Object.fromEntries([...committed.matchAll(/^# ([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
  t.same(Object.keys(settings).sort(), Object.keys(ConfigSchema.properties).sort());
  const config = loadConfig(settings);
  t.equal(config.PORT, 3000);
  t.same(config.TRUST_PROXY, ['none']);
});
