// Reads writer schemas from the Confluent Schema Registry by the id each record carries, and caches
// them (and their resolution to this service's reader schema) for good: ids are immutable.
import avro from 'avsc';
import { dispenseReaderType } from './schema.ts';

/** The registry could not be asked (down, timed out, answered 5xx): not the record's fault. */
export class RegistryUnavailableError extends Error {
  override name = 'RegistryUnavailableError';
}

export type SchemaLookup =
  | { kind: 'found'; type: avro.Type; resolver: avro.Resolver }
  | { kind: 'unknown'; reason: string }
  | { kind: 'incompatible'; reason: string };

export interface SchemaRegistryClient {
  /** The decoder for a schema id; throws RegistryUnavailableError when the registry cannot answer. */
  lookup(id: number): Promise<SchemaLookup>;
}

export function schemaRegistryClient(baseUrl: string, options: { timeoutMs?: number } = {}): SchemaRegistryClient {
  const cache = new Map<number, SchemaLookup>();
  const base = baseUrl.replace(/\/+$/, '');
  return {
    async lookup(id) {
      const cached = cache.get(id);
      if (cached) return cached;
      let response: Response;
      try {
        response = await fetch(`${base}/schemas/ids/${id}`, {
          headers: { accept: 'application/vnd.schemaregistry.v1+json, application/json' },
          signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
        });
      } catch (error) {
        throw new RegistryUnavailableError(`schema registry unreachable: ${(error as Error).cause ?? (error as Error).message}`);
      }
      const text = await response.text().catch(() => '');
      if (response.status === 404) {
        // A 404 for this id (error_code 40403) is the record's problem; kept as unknown, not cached,
        // so a schema registered later is found.
        return { kind: 'unknown', reason: `unknown schema id ${id} (the registry answered 404)` };
      }
      if (!response.ok) throw new RegistryUnavailableError(`schema registry answered ${response.status} for schema id ${id}`);
      let lookup: SchemaLookup;
      try {
        const body = JSON.parse(text) as { schema?: string; schemaType?: string };
        if (body.schemaType !== undefined && body.schemaType !== 'AVRO') {
          lookup = { kind: 'incompatible', reason: `schema id ${id} is ${body.schemaType}, not Avro` };
        } else {
          const type = avro.Type.forSchema(JSON.parse(body.schema ?? '') as avro.Schema);
          lookup = { kind: 'found', type, resolver: dispenseReaderType.createResolver(type) };
        }
      } catch (error) {
        lookup = { kind: 'incompatible', reason: `schema id ${id} cannot be read as a CMOP dispense event: ${(error as Error).message}` };
      }
      cache.set(id, lookup);
      return lookup;
    },
  };
}
