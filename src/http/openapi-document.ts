// The OpenAPI description as YAML, from an app built with the default configuration. Building it
// opens no connection: postgres.js connects on the first query, and nothing here runs one.
import postgres from 'postgres';
import { buildApp } from '../app.ts';
import { testConfig } from '../config.ts';

export async function openApiDocument(): Promise<string> {
  const sql = postgres('postgres://openapi@127.0.0.1:1/none', { max: 1 });
  const app = await buildApp({
    config: testConfig({ LOG_LEVEL: 'silent' }),
    sql: sql as never,
    sandboxUrls: { vaNotify: 'http://127.0.0.1:1', aal: 'http://127.0.0.1:1' },
  });
  try {
    await app.ready();
    return `# Generated from the route schemas by \`npm run openapi\`; do not edit.\n${app.swagger({ yaml: true })}`;
  } finally {
    await app.close();
    await sql.end({ timeout: 0 });
  }
}
