// The README is how operators learn the configuration: it must name every setting the schema has.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { ConfigSchema } from '../src/config.ts';

t.test('README documents every configuration variable', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const missing = Object.keys(ConfigSchema.properties).filter((name) => !readme.includes(`\`${name}\``));
  t.same(missing, [], 'variables missing from the README');
  t.match(readme, /npm install && npm start/);
  t.match(readme, /npm install && npm test/);
});
