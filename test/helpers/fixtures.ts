// Rows as the ingest would have written them, for tests of the later stages.
import type { SqlHandle } from '../../src/db/connect.ts';
import { withDrafts } from '../../bench/lib/drafts.ts';

export interface DispenseFixture {
  station_number?: string;
  rx_number: string;
  fill_number?: number;
  tracking_number: string;
  carrier?: string;
  drug_name?: string | null;
  patient_icn: string | null;
  mhv_correlation_id?: string | null;
  shipped_at?: Date;
  state?: string;
  /** How long ago the dispense arrived; grouping waits for a quiet period after the newest. */
  arrived_minutes_ago?: number;
}

export async function insertDispenses(sql: SqlHandle, dispenses: DispenseFixture[]): Promise<number[]> {
  const rows = dispenses.map((d) => ({
    station_number: d.station_number ?? '521',
    rx_number: d.rx_number,
    fill_number: d.fill_number ?? 0,
    tracking_number: d.tracking_number,
    carrier: d.carrier ?? 'UPS',
    drug_name: d.drug_name ?? 'SIMVASTATIN 40MG TAB',
    patient_icn: d.patient_icn,
    mhv_correlation_id: d.mhv_correlation_id === undefined ? '10123456' : d.mhv_correlation_id,
    shipped_at: d.shipped_at ?? new Date('2026-05-14T16:00:00Z'),
    state: d.state ?? 'pending',
    created_at: new Date(Date.now() - (d.arrived_minutes_ago ?? 120) * 60_000),
  }));
  const inserted = await sql<{ id: number }[]>`insert into medication_dispense ${sql(await withDrafts(sql, rows))} returning id`;
  return inserted.map((r) => r.id);
}

/** An ICN of the documented shape (ten digits, V, six digits) from a number. */
export function icn(n: number): string {
  return `10${String(n).padStart(8, '0')}V${String(n % 1_000_000).padStart(6, '0')}`;
}
