// The service's start command as `npm start` runs it (and the container: test/process/start-path.test.ts
// keeps the Dockerfile's CMD equal to it). Benchmarks and process tests start the service with the
// same node flags, so that what they measure (peak RSS above all) is what production runs.
import { readFileSync } from 'node:fs';

export interface StartCommand {
  /** Flags given to node before the entry point, e.g. the heap caps. */
  nodeFlags: string[];
  /** The entry point, relative to the project root. */
  entry: string;
}

/** Splits `npm start`'s script (`node <flags> <entry>`) into its parts. */
export function startCommand(): StartCommand {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
  const [program, ...rest] = pkg.scripts.start.trim().split(/\s+/);
  const entry = rest.at(-1);
  if (program !== 'node' || entry === undefined || entry.startsWith('-')) {
    throw new Error(`npm start must be "node [flags] <entry>", not "${pkg.scripts.start}"`);
  }
  return { nodeFlags: rest.slice(0, -1), entry };
}
