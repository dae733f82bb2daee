// Packages near the cut-over instant T, as CMOP sends them and as MHV's export lists them, and the
// calls the on-call engineer makes, for the cut-over tests.
import { internalAuth, type TestApp } from './app.ts';
import { icn } from './fixtures.ts';

export const T = Date.parse('2026-06-02T14:00:00Z');
export const hours = (h: number) => new Date(T + h * 3_600_000);
export const settings = { DELIVERY_START_AT: '2026-06-02T14:00:00Z', CUTOVER_HOLD_HOURS: '6', GROUPING_QUIET_MINUTES: '0' };

export interface Fill {
  rx: string;
  /** This service's shipped-at (the CMOP message time), in hours from T. */
  ours: number;
}

export interface Package {
  trackingNumber: string;
  veteran: number;
  fills: Fill[];
  /** MHV's own shipped date for the package, in hours from T: MHV emails it when before T. */
  mhv: number;
}

// Skews of one to four hours either way between the two systems' times for one package.
export const packages: Package[] = [
  { trackingNumber: '1Z0000000000000001', veteran: 1, fills: [{ rx: '1000001', ours: -10 }], mhv: -8 },
  { trackingNumber: '1Z0000000000000002', veteran: 2, fills: [{ rx: '2000001', ours: -3 }], mhv: 1 }, // MHV: after T; here: before
  { trackingNumber: '1Z0000000000000003', veteran: 3, fills: [{ rx: '3000001', ours: 2 }], mhv: -2 }, // MHV: before T; here: after
  { trackingNumber: '1Z0000000000000004', veteran: 1, fills: [{ rx: '1000004', ours: 1 }], mhv: 2 },
  { trackingNumber: '1Z0000000000000005', veteran: 2, fills: [{ rx: '2000005', ours: -1 }], mhv: -2 },
  { trackingNumber: '1Z0000000000000006', veteran: 3, fills: [{ rx: '3000006', ours: 10 }], mhv: 7 },
  // A package whose fills' message times straddle the start of the hold window, MHV: after T.
  {
    trackingNumber: '1Z0000000000000007',
    veteran: 4,
    fills: [
      { rx: '4000001', ours: -6.2 },
      { rx: '4000002', ours: -5.8 },
    ],
    mhv: 0.5,
  },
  // A package whose fills straddle the end of the hold window, MHV: before T.
  {
    trackingNumber: '1Z0000000000000008',
    veteran: 5,
    fills: [
      { rx: '5000001', ours: 5.8 },
      { rx: '5000002', ours: 6.3 },
    ],
    mhv: -0.2,
  },
];

export const event = (p: Package, fill: Fill, shippedAt = hours(fill.ours)) => ({
  messageId: `cutover-${fill.rx}`,
  stationNumber: '521',
  patient: { icn: icn(p.veteran), mhvCorrelationId: String(10_000_000 + p.veteran) },
  prescription: { rxNumber: fill.rx, fillNumber: 0, drugName: 'SIMVASTATIN 40MG TAB', ndc: '00093718098', quantity: 90 },
  dispensedAt: new Date(shippedAt.getTime() - 3_600_000).toISOString(),
  shippedAt: shippedAt.toISOString(),
  carrier: 'UPS',
  trackingNumber: p.trackingNumber,
});

/** MHV's export as the runbook's query writes it: one row per package MHV emailed. */
export function mhvExport(list: Package[]): string {
  const rows = list
    .filter((p) => p.mhv < 0)
    .map(
      (p) =>
        `${icn(p.veteran)},${p.trackingNumber},UPS,${hours(p.mhv + 1)
          .toISOString()
          .replace('.000Z', 'Z')}`,
    );
  const lines = ['icn,tracking_number,carrier,sent_date', ...rows];
  return `${lines.join('\r\n')}\r\n`;
}

export async function ingest(app: TestApp['app'], events: unknown[]) {
  const answer = await app.inject({
    method: 'POST',
    url: '/v1/dispenses',
    headers: { ...internalAuth, 'content-type': 'application/json' },
    payload: events,
  });
  if (answer.statusCode !== 200) throw new Error(`ingest answered ${answer.statusCode}: ${answer.body}`);
}

export const release = (app: TestApp['app'], csv: string, mhvJobRunAt: string | null = new Date().toISOString()) =>
  app.inject({
    method: 'POST',
    url: `/v1/cutover/release${mhvJobRunAt === null ? '' : `?mhvJobRunAt=${encodeURIComponent(mhvJobRunAt)}`}`,
    headers: { ...internalAuth, 'content-type': 'text/csv' },
    payload: csv,
  });

/** Each tracking number VA Notify was asked to email, with how many emails named it. */
export function emailedByService(vaNotify: TestApp['vaNotify']): Map<string, number> {
  const counts = new Map<string, number>();
  for (const n of vaNotify.state.notifications.values()) {
    const info = String((n.request.personalisation as Record<string, string>).tracking_info);
    for (const p of packages) if (info.includes(p.trackingNumber)) counts.set(p.trackingNumber, (counts.get(p.trackingNumber) ?? 0) + 1);
  }
  return counts;
}

export function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.split(' ')[1]);
}
