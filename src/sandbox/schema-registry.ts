// A Confluent Schema Registry on loopback, speaking the part of its API this service and its
// development publisher use: register a schema under a subject, read it by id. For tests and
// development only; production reads the Event Bus's registry.
import { createServer, type Server } from 'node:http';

export interface SandboxSchemaRegistry {
  url: string;
  /** Registers a schema under a subject (the same text twice gets the same id), as POST does. */
  register(subject: string, schema: unknown): number;
  /** Makes every request fail with 503 (a registry that is down) until set back. */
  setUnavailable(unavailable: boolean): void;
  requests: number;
  close(): Promise<void>;
}

const ContentType = 'application/vnd.schemaregistry.v1+json';

export async function startSandboxSchemaRegistry(options: { port?: number; host?: string } = {}): Promise<SandboxSchemaRegistry> {
  const schemas: string[] = [];
  const subjects = new Map<string, number[]>();
  let unavailable = false;
  const register = (subject: string, schema: unknown) => {
    const text = typeof schema === 'string' ? schema : JSON.stringify(schema);
    let id = schemas.indexOf(text) + 1;
    if (id === 0) id = schemas.push(text);
    const versions = subjects.get(subject) ?? [];
    if (!versions.includes(id)) versions.push(id);
    subjects.set(subject, versions);
    return id;
  };
  const state = { requests: 0 };
  const server: Server = createServer((request, response) => {
    state.requests++;
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': ContentType });
      response.end(JSON.stringify(body));
    };
    if (unavailable) return send(503, { error_code: 50301, message: 'the sandbox registry is set unavailable' });
    const url = new URL(request.url ?? '/', 'http://registry');
    const byId = /^\/schemas\/ids\/(\d+)$/.exec(url.pathname);
    if (request.method === 'GET' && byId) {
      const schema = schemas[Number(byId[1]) - 1];
      return schema === undefined ? send(404, { error_code: 40403, message: 'Schema not found' }) : send(200, { schema });
    }
    const version = /^\/subjects\/([^/]+)\/versions\/(\d+|latest)$/.exec(url.pathname);
    if (request.method === 'GET' && version) {
      const subject = decodeURIComponent(version[1]!);
      const ids = subjects.get(subject) ?? [];
      const index = version[2] === 'latest' ? ids.length - 1 : Number(version[2]) - 1;
      const id = ids[index];
      if (id === undefined) return send(404, { error_code: 40402, message: 'Version not found' });
      return send(200, { subject, version: index + 1, id, schema: schemas[id - 1] });
    }
    const post = /^\/subjects\/([^/]+)\/versions$/.exec(url.pathname);
    if (request.method === 'POST' && post) {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        try {
          const { schema } = JSON.parse(body) as { schema: string };
          JSON.parse(schema);
          send(200, { id: register(decodeURIComponent(post[1]!), schema) });
        } catch {
          send(422, { error_code: 42201, message: 'Invalid schema' });
        }
      });
      return;
    }
    send(404, { error_code: 404, message: 'HTTP 404 Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, options.host ?? '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${address.port}`,
    register,
    setUnavailable(value) {
      unavailable = value;
    },
    get requests() {
      return state.requests;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
