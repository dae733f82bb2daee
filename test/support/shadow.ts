// Rows as the grouping job leaves them in shadow mode, inserted directly: tracking emails in state
// 'shadowed' with their grouped dispenses, and dispenses in the other states. The veterans are the
// synthetic ones of the shared samples.
import type { SqlHandle } from '../../src/db/connect.ts';
import { insertDispenses, insertTrackingEmail, type DispenseFixture } from './fixtures.ts';

export const Veterans = {
  alpha: '1012345678V123456',
  bravo: '1098765432V654321',
  charlie: '1055555555V111222',
  delta: '1000000123V456789',
  json: '1011111111V222333',
} as const;

export interface PackageFixture {
  trackingNumber: string;
  carrier: string;
  shippedAt: string;
  /** Rx numbers of the prescriptions in the package (one dispense each). */
  rxNumbers: string[];
}

/**
 * A dispense as the shadow samples hold it: dispensed when shipped, shipped at an unknown time
 * unless given, no drug name or MHV correlation id, arrived just now.
 */
export function shadowDispense(d: DispenseFixture & { state: string }): DispenseFixture {
  return {
    fill_number: 1,
    drug_name: null,
    mhv_correlation_id: null,
    arrived_minutes_ago: 0,
    ...d,
    shipped_at: d.shipped_at ?? null,
    dispensed_at: d.shipped_at ?? null,
  };
}

/** One shadowed tracking email for a veteran, its packages' dispenses grouped into it. Returns its id. */
export async function insertShadowedEmail(
  sql: SqlHandle,
  icn: string,
  packages: PackageFixture[],
  createdAt = '2026-05-14T18:00:00Z',
): Promise<string> {
  const prescriptions = packages.reduce((n, p) => n + p.rxNumbers.length, 0);
  const personalisation = {
    tracking_info: packages
      .map((p) => `${p.carrier} ${p.trackingNumber}: ${p.rxNumbers.map((rx) => `Prescription ending in ${rx.slice(-4)}`).join(', ')}`)
      .join('\n'),
    package_count: String(packages.length),
    prescription_count: String(prescriptions),
    shipped_date: 'May 14, 2026',
  };
  const emailId = await insertTrackingEmail(sql, {
    patient_icn: icn,
    personalisation,
    package_count: packages.length,
    prescription_count: prescriptions,
    state: 'shadowed',
    created_at: createdAt,
  });
  for (const p of packages) {
    for (const rxNumber of p.rxNumbers) {
      await insertDispenses(sql, [
        shadowDispense({
          patient_icn: icn,
          tracking_number: p.trackingNumber,
          carrier: p.carrier,
          shipped_at: p.shippedAt,
          state: 'grouped',
          tracking_email_id: emailId,
          rx_number: rxNumber,
        }),
      ]);
    }
  }
  return emailId;
}
