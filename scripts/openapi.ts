// Writes openapi.yaml from the route schemas (npm run openapi); test/openapi.test.ts fails when the
// file and the routes differ.
import { writeFileSync } from 'node:fs';
import { openApiDocument } from '../src/http/openapi-document.ts';

writeFileSync(new URL('../openapi.yaml', import.meta.url), await openApiDocument());
