// Fastify with nothing but one route that answers at once: what this machine's HTTP stack can do
// before the service adds a single line of its own. Bodies of any type are read as text (JSON is
// parsed, as Fastify does by default), up to the ingest body limit.
import Fastify from 'fastify';
import { serveParent } from './child.ts';

const app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));
app.post('/empty', async () => ({ status: 'received' }));
const url = await app.listen({ port: 0, host: '127.0.0.1' });
serveParent({}, () => app.close());
process.send!({ type: 'ready', url: `${url}/empty` });
