// The one place that knows how this service talks to Postgres.
import postgres from 'postgres';

export type Sql = postgres.Sql;
/** A handle that may be the pool or a transaction: repository functions take this. */
export type SqlHandle = postgres.ISql;
export type TransactionSql = postgres.TransactionSql;

export interface ConnectOptions {
  max?: number;
  /** Name shown in pg_stat_activity, so an operator can tell instances apart. */
  applicationName?: string;
}

export function connect(url: string, options: ConnectOptions = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    // int8 (ids, count(*)) as JS numbers: every such value here stays far below 2^53.
    types: {
      int8: { to: 20, from: [20], serialize: (value: number) => String(value), parse: (value: string) => Number(value) },
    },
    transform: { undefined: null },
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? 'rx-tracking-email' },
    idle_timeout: 30,
    max_lifetime: 60 * 30,
  });
}

/**
 * For a transaction whose statements must read work in progress (due emails, due AAL events,
 * pending dispenses) and never the history beside it: every such set has a partial index, and with
 * sequential scans off Postgres takes it whatever its statistics say. Statistics taken while a
 * table held mostly work in progress (the first analyze after a cut-over backlog) otherwise make a
 * claim read the whole table once it has grown. Also:
 * - custom plans, so that a batch's LIMIT is planned as the number it is;
 * - no JIT: a table with no index for a condition (the one-row pause tables) is still scanned, at a
 *   cost so inflated by enable_seqscan=off that Postgres would compile the statement;
 * - no parallel workers: starting them costs more than reading a few hundred rows.
 */
export async function planForWorkInProgress(tx: SqlHandle): Promise<void> {
  await tx`
    select set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true),
           set_config('jit', 'off', true), set_config('max_parallel_workers_per_gather', '0', true)`;
}

/** True when the error is Postgres saying it could not serve us (down, restarting, unreachable). */
/** Postgres's error codes for a lock not had within lock_timeout (NOWAIT too) and for a deadlock. */
export const LockNotAvailable = '55P03';
export const DeadlockDetected = '40P01';

export function isDatabaseUnavailable(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code ?? '';
  return [
    'ECONNREFUSED',
    'ECONNRESET',
    'CONNECT_TIMEOUT',
    'CONNECTION_CLOSED',
    'CONNECTION_ENDED',
    'CONNECTION_DESTROYED',
    '57P01',
    '57P03',
    '53300',
  ].includes(code);
}

/**
 * The error postgres.js 3.4.x throws, outside every promise, when a connection is cut while a query of
 * a `sql.begin()` transaction is in flight (a backend terminated, a Postgres restart, a failover): its
 * own ROLLBACK is written to a socket it has already dropped (porsager/postgres#1208). The process
 * cannot catch it where it happens, and the transaction's connection is left in a state nobody can
 * vouch for, so the service exits and is restarted (src/server.ts).
 */
export function isDriverWriteAfterClose(error: unknown): boolean {
  return (
    error instanceof TypeError &&
    /reading 'write'/.test(error.message) &&
    /[\\/]postgres[\\/]src[\\/]connection\.js/.test(error.stack ?? '')
  );
}
