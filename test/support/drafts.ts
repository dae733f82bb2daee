// Pending dispenses written straight into the table (fixtures, the ingest stage's limit) name their
// veteran's tracking email draft, as ingest stores them (sql/019_tracking_email_draft.sql).
import type { SqlHandle } from '../../src/db/connect.ts';

export interface DraftableRow {
  patient_icn: string | null;
  state?: string;
  created_at?: Date;
  tracking_email_id?: string | null;
}

/**
 * The rows, each pending one that names no draft given its veteran's draft: created, or widened to
 * the rows' first and newest arrival (`created_at`, now when not given), in ICN order as ingest
 * takes them. Other rows are returned as they are.
 */
export async function withDrafts<T extends DraftableRow>(
  sql: SqlHandle,
  rows: readonly T[],
): Promise<(T & { tracking_email_id: string | null })[]> {
  const now = new Date();
  const arrivals = new Map<string, { first: Date; last: Date }>();
  const drafted = (row: T) => (row.state ?? 'pending') === 'pending' && row.patient_icn !== null && row.tracking_email_id == null;
  for (const row of rows) {
    if (!drafted(row)) continue;
    const at = row.created_at ?? now;
    const known = arrivals.get(row.patient_icn!);
    if (!known) arrivals.set(row.patient_icn!, { first: at, last: at });
    else {
      if (at < known.first) known.first = at;
      if (at > known.last) known.last = at;
    }
  }
  const ids = new Map<string, string>();
  if (arrivals.size > 0) {
    const icns = [...arrivals.keys()].sort();
    const drafts = await sql<{ id: string; patient_icn: string }[]>`
      insert into tracking_email_draft as r (patient_icn, first_arrival_at, last_arrival_at)
      select * from unnest(${icns}::text[],
                           ${icns.map((icn) => arrivals.get(icn)!.first.toISOString())}::timestamptz[],
                           ${icns.map((icn) => arrivals.get(icn)!.last.toISOString())}::timestamptz[])
      on conflict (patient_icn) do update
        set first_arrival_at = least(r.first_arrival_at, excluded.first_arrival_at),
            last_arrival_at = greatest(r.last_arrival_at, excluded.last_arrival_at)
      returning id, patient_icn`;
    for (const draft of drafts) ids.set(draft.patient_icn, draft.id);
  }
  return rows.map((row) => ({ ...row, tracking_email_id: drafted(row) ? ids.get(row.patient_icn!)! : (row.tracking_email_id ?? null) }));
}
