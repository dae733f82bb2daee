// Advisory lock keys, in one place so that no two uses collide, and the session-level lock the
// one-at-a-time jobs hold.
import type { Sql } from './connect.ts';

export const AdvisoryLock = {
  migrate: 727_001,
  /** One grouping run at a time across all instances: a veteran's dispenses are never split between two runs. */
  grouping: 727_002,
  /**
   * Namespace of the per-notification locks (two-key form: (namespace, hash of the id)) that order a
   * callback and the sender's commit of the same notification id.
   */
  notification: 727_010,
  /** One fallback sweep at a time across all instances. */
  sweep: 727_003,
  /** One decision on the packages held at the cut-over at a time. */
  cutoverRelease: 727_004,
  /** One retention run at a time across all instances. */
  retention: 727_005,
} as const;

/**
 * Holds the advisory lock `key` for the duration of `work`, on one reserved connection: a
 * session-level advisory lock belongs to the connection that took it, and ends with it if this
 * process dies, so a crashed run never blocks the next one. Returns undefined when another session
 * holds it. The work itself runs on the rest of the pool (so the pool needs at least two connections).
 */
export async function withSessionLock<R>(sql: Sql, key: number, work: () => Promise<R>): Promise<{ result: R } | undefined> {
  const connection = await sql.reserve();
  try {
    const [row] = await connection<{ acquired: boolean }[]>`select pg_try_advisory_lock(${key}) as acquired`;
    if (!row?.acquired) return undefined;
    try {
      return { result: await work() };
    } finally {
      await connection`select pg_advisory_unlock(${key})`;
    }
  } finally {
    connection.release();
  }
}
