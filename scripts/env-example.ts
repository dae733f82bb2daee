// Writes .env.example from the config schema (npm run env-example); test/config/env-example.test.ts
// fails when the file and the schema differ. Every line is commented out: a copy changes nothing
// until a value is set.
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { TSchema } from '@sinclair/typebox';
import { ConfigSchema, DevelopmentSecrets, SecretNames } from '../src/config.ts';

export function envExample(): string {
  const lines = [
    "# The service's settings, generated from the config schema in src/config.ts by `npm run env-example`.",
    '# Every value shown is the default; a setting without one is unset by default. README.md explains each.',
    '',
  ];
  for (const [name, schema] of Object.entries(ConfigSchema.properties) as [string, TSchema][]) {
    const secret = (SecretNames as readonly string[]).includes(name);
    const development = (DevelopmentSecrets as Record<string, string>)[name];
    const notes = [
      secret ? `secret; or ${name}_FILE, a file holding it` : undefined,
      development === undefined ? undefined : `development default: ${development}`,
      schema.anyOf ? `one of ${(schema.anyOf as { const: string }[]).map((option) => option.const).join(', ')}` : undefined,
    ].filter((note) => note !== undefined);
    lines.push(`# ${schema.description ?? name}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
    lines.push(`# ${name}=${schema.default === undefined ? '' : String(schema.default)}`, '');
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  writeFileSync(new URL('../.env.example', import.meta.url), envExample());
}
