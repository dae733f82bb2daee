// The shadow comparison: what MHV emailed (its export) against what this service would have emailed
// over the same period (its shadowed tracking emails). A pure function over both sides, so every
// rule below is testable without a database.
//
// A package is a veteran's tracking number. MHV's email is one veteran's packages on one sent date
// (UTC); the service's email is one tracking_email. A package is compared when either side emailed
// it within the window (MHV by sent date, the service by shipped_at); once compared, the other side
// is looked up whatever its date, so a package shipped just before the window and emailed by MHV
// just inside it still matches.
import { normaliseCarrier, type MedicationDispenseState } from '../ingest/dispense.ts';
import type { BadRow, ExportRow } from './export.ts';

/** One of the service's packages: its dispenses with one (ICN, tracking number). */
export interface OurPackage {
  /** Null for dispenses that came without an ICN (unprocessable). */
  icn: string | null;
  /** Upper-cased, as the export's is. */
  trackingNumber: string;
  carrier: string;
  shippedAt: Date | null;
  /** True when one of its dispenses shipped within the window. */
  inWindow: boolean;
  /** The tracking email it was grouped into (the earliest, if later fills joined another); null when none. */
  emailId: string | null;
  states: MedicationDispenseState[];
  /** state_reason of an unprocessable dispense in it. */
  unprocessableReason: string | null;
}

/** [from, to): from inclusive, to exclusive. */
export interface Window {
  from: Date;
  to: Date;
}

export const MismatchKinds = [
  'bad_row',
  'emailed_by_mhv_only',
  'emailed_by_service_only',
  'grouped_differently',
  'carrier_differs',
  'emailed_twice_by_mhv',
] as const;
export type MismatchKind = (typeof MismatchKinds)[number];

/**
 * One difference. It carries the last four characters of the ICN, never the whole ICN, and no
 * name, email address or Rx number: the list goes to the MHV database team, who find each row by
 * its export line or its tracking number; the API answers it too, and must not return a full ICN
 * of a veteran the caller did not send (the service-only packages).
 */
export interface Mismatch {
  kind: MismatchKind;
  icnLast4: string | null;
  trackingNumbers: string[];
  /** Lines of the export the mismatch concerns. */
  lines: number[];
  carrier: string | null;
  /** MHV's sent dates (UTC days). */
  mhvSentDates: string[];
  /** The service's shipped_at for the package (ISO), when it has the dispense. */
  shippedAt: string | null;
  /** The service's tracking email ids. */
  emailIds: string[];
  /** Why, in words: the reason a side did not email, or how the grouping differs. */
  detail: string;
}

export interface ShadowSummary {
  window: { from: string; to: string };
  export: {
    /** Data rows read (valid and bad). */
    rows: number;
    badRows: number;
    /** Valid rows outside the window whose package the service did not email within it. */
    rowsNotCompared: number;
  };
  packagesCompared: number;
  veteransCompared: number;
  mhv: { packages: number; emails: number };
  service: { packages: number; emails: number };
  matched: { packages: number; veterans: number };
  emailedByMhvOnly: { packages: number; byReason: Record<string, number> };
  emailedByServiceOnly: { packages: number };
  groupedDifferently: { veterans: number };
  carrierDiffers: { packages: number };
  emailedTwiceByMhv: { packages: number };
  /** Share of compared packages that one side emailed and the other would not. */
  packageMismatchRate: number;
  /** Share of compared veterans whose emails differ in any way. */
  veteranMismatchRate: number;
}

export interface ShadowReport {
  summary: ShadowSummary;
  mismatches: Mismatch[];
}

export const NotEmailedReasons = {
  noDispense: 'no dispense received',
  otherIcn: 'dispense received under another ICN',
  pending: 'still pending',
  unprocessable: 'unprocessable',
  excluded: 'excluded before DELIVERY_START_AT',
  held: "held at the cut-over until MHV's export is compared",
  cancelled: 'cancelled',
} as const;

interface MhvPackage {
  icn: string;
  trackingNumber: string;
  carrier: string;
  lines: number[];
  /** Distinct UTC days, sorted. */
  sentDays: string[];
  inWindow: boolean;
}

const day = (date: Date) => date.toISOString().slice(0, 10);
const last4 = (icn: string | null) => (icn === null ? null : icn.slice(-4));
const packageKey = (icn: string, trackingNumber: string) => `${icn} ${trackingNumber}`;

/**
 * Carriers are compared as ingest names them (`UNITED STATES POSTAL SERVICE` is USPS), by their
 * letters and digits only: `FedEx`, `FEDEX` and `Fed-Ex` are one carrier.
 */
const carrierName = (carrier: string) => normaliseCarrier(carrier).replace(/[^A-Z0-9]/g, '');

function whyNotEmailed(pkg: OurPackage | undefined, otherIcn: boolean): string {
  if (pkg === undefined) return otherIcn ? NotEmailedReasons.otherIcn : NotEmailedReasons.noDispense;
  // One package can hold fills in several states; the one a person can act on comes first.
  if (pkg.states.includes('pending')) return NotEmailedReasons.pending;
  if (pkg.states.includes('unprocessable')) return `${NotEmailedReasons.unprocessable}: ${pkg.unprocessableReason ?? 'no reason recorded'}`;
  if (pkg.states.includes('held_for_cutover')) return NotEmailedReasons.held;
  if (pkg.states.includes('excluded')) return NotEmailedReasons.excluded;
  if (pkg.states.includes('cancelled')) return NotEmailedReasons.cancelled;
  return `dispense ${pkg.states.join('/')} without a tracking email`;
}

function inWindow(date: Date, window: Window): boolean {
  return date.getTime() >= window.from.getTime() && date.getTime() < window.to.getTime();
}

/** Two partitions of one veteran's packages, each as sorted groups of tracking numbers. */
function partition(groups: Map<string, string[]>): string[][] {
  return [...groups.values()].map((g) => [...g].sort()).sort((a, b) => (a.join(' ') < b.join(' ') ? -1 : 1));
}

function samePartition(a: string[][], b: string[][]): boolean {
  return a.length === b.length && a.every((group, i) => group.join(' ') === b[i]!.join(' '));
}

export interface CompareInput {
  rows: ExportRow[];
  badRows: BadRow[];
  ours: OurPackage[];
  window: Window;
}

export function compareShadow({ rows, badRows, ours, window }: CompareInput): ShadowReport {
  const mismatches: Mismatch[] = [];
  const empty = { icnLast4: null, trackingNumbers: [], lines: [], carrier: null, mhvSentDates: [], shippedAt: null, emailIds: [] };
  for (const bad of badRows) mismatches.push({ ...empty, kind: 'bad_row', lines: [bad.line], detail: bad.problem });

  // MHV's packages: rows of one package on one day are one email line (an export may list one row
  // per prescription); the same package on two days was emailed twice.
  const mhv = new Map<string, MhvPackage>();
  for (const row of rows) {
    const key = packageKey(row.icn, row.trackingNumber);
    const pkg = mhv.get(key) ?? {
      icn: row.icn,
      trackingNumber: row.trackingNumber,
      carrier: row.carrier,
      lines: [],
      sentDays: [],
      inWindow: false,
    };
    pkg.lines.push(row.line);
    if (!pkg.sentDays.includes(day(row.sentAt))) pkg.sentDays.push(day(row.sentAt));
    pkg.inWindow ||= inWindow(row.sentAt, window);
    mhv.set(key, pkg);
  }
  for (const pkg of mhv.values()) pkg.sentDays.sort();

  const service = new Map<string, OurPackage>();
  for (const pkg of ours) if (pkg.icn !== null) service.set(packageKey(pkg.icn, pkg.trackingNumber), pkg);

  const compared = new Set<string>();
  for (const [key, pkg] of mhv) if (pkg.inWindow) compared.add(key);
  for (const [key, pkg] of service) if (pkg.inWindow && pkg.emailId !== null) compared.add(key);

  // Packages both sides emailed, for the grouping check; veterans with any difference.
  const matched: { icn: string; trackingNumber: string; day: string; emailId: string; lines: number[] }[] = [];
  const veterans = new Set<string>();
  const differing = new Set<string>();
  const mhvOnlyPackages: { key: string; m: MhvPackage; o: OurPackage | undefined }[] = [];
  let carrierDiffers = 0;
  let twice = 0;
  let mhvPackages = 0;
  let servicePackages = 0;
  const mhvEmails = new Set<string>();
  const serviceEmails = new Set<string>();
  const serviceOnly: Mismatch[] = [];

  for (const key of compared) {
    const m = mhv.get(key);
    const o = service.get(key);
    const icn = m?.icn ?? o!.icn!;
    veterans.add(icn);
    if (m !== undefined) {
      mhvPackages++;
      for (const d of m.sentDays) mhvEmails.add(`${icn} ${d}`);
      if (m.sentDays.length > 1) {
        twice++;
        differing.add(icn);
        mismatches.push({
          ...packageMismatch(m, o),
          kind: 'emailed_twice_by_mhv',
          detail: `MHV emailed this package on ${m.sentDays.length} days; the service emails a package once`,
        });
      }
    }
    if (o?.emailId) {
      servicePackages++;
      serviceEmails.add(o.emailId);
    }
    if (m !== undefined && o?.emailId) {
      // The earliest day is the email that told the veteran first; a repeat is reported above.
      matched.push({ icn, trackingNumber: m.trackingNumber, day: m.sentDays[0]!, emailId: o.emailId, lines: m.lines });
      if (carrierName(m.carrier) !== carrierName(o.carrier) && carrierName(m.carrier) !== 'UNK' && carrierName(o.carrier) !== 'UNK') {
        carrierDiffers++;
        differing.add(icn);
        mismatches.push({
          ...packageMismatch(m, o),
          kind: 'carrier_differs',
          carrier: null,
          detail: `MHV ${m.carrier}, service ${o.carrier}`,
        });
      }
    } else if (m !== undefined) {
      differing.add(icn);
      mhvOnlyPackages.push({ key, m, o });
    } else {
      differing.add(icn);
      serviceOnly.push({ ...packageMismatch(undefined, o), kind: 'emailed_by_service_only', detail: 'not in the export' });
    }
  }
  for (const m of serviceOnly) mismatches.push(m);

  // Why MHV emailed what the service did not. A dispense that came without an ICN, or under another
  // ICN, is found by its tracking number; the index covers only these packages' numbers.
  const wanted = new Set(mhvOnlyPackages.map(({ m }) => m.trackingNumber));
  const byTracking = new Map<string, OurPackage[]>();
  for (const pkg of ours) {
    if (!wanted.has(pkg.trackingNumber)) continue;
    byTracking.set(pkg.trackingNumber, [...(byTracking.get(pkg.trackingNumber) ?? []), pkg]);
  }
  const byReason: Record<string, number> = {};
  for (const { m, o } of mhvOnlyPackages) {
    const others = byTracking.get(m.trackingNumber) ?? [];
    const dispensed = o ?? others.find((p) => p.icn === null);
    const reason = whyNotEmailed(
      dispensed,
      others.some((p) => p.icn !== null && p.icn !== m.icn),
    );
    const reasonKey = reason.startsWith(`${NotEmailedReasons.unprocessable}:`) ? NotEmailedReasons.unprocessable : reason;
    byReason[reasonKey] = (byReason[reasonKey] ?? 0) + 1;
    mismatches.push({ ...packageMismatch(m, dispensed), kind: 'emailed_by_mhv_only', detail: reason });
  }

  // Grouping: over the packages both sides emailed, a veteran's packages must fall into the same
  // emails on both sides. Missing packages are reported above and do not count again here.
  matched.sort((a, b) => (a.icn < b.icn ? -1 : a.icn > b.icn ? 1 : 0));
  let groupedDifferently = 0;
  for (let start = 0; start < matched.length; ) {
    let end = start;
    while (end < matched.length && matched[end]!.icn === matched[start]!.icn) end++;
    const packages = matched.slice(start, end);
    start = end;
    const icn = packages[0]!.icn;
    const mhvDays = new Map<string, string[]>();
    const emails = new Map<string, string[]>();
    for (const p of packages) {
      mhvDays.set(p.day, [...(mhvDays.get(p.day) ?? []), p.trackingNumber]);
      emails.set(p.emailId, [...(emails.get(p.emailId) ?? []), p.trackingNumber]);
    }
    const mhvGroups = partition(mhvDays);
    const serviceGroups = partition(emails);
    if (samePartition(mhvGroups, serviceGroups)) continue;
    groupedDifferently++;
    differing.add(icn);
    const mhvText = [...mhvDays].sort(([a], [b]) => (a < b ? -1 : 1)).map(([d, tns]) => `${d} [${[...tns].sort().join(' ')}]`);
    const serviceText = serviceGroups.map((g) => `[${g.join(' ')}]`);
    mismatches.push({
      ...empty,
      kind: 'grouped_differently',
      icnLast4: last4(icn),
      trackingNumbers: mhvGroups.flat().sort(),
      lines: packages.flatMap((p) => p.lines).sort((a, b) => a - b),
      mhvSentDates: [...mhvDays.keys()].sort(),
      emailIds: [...emails.keys()].sort(),
      detail: `MHV sent ${plural(mhvGroups.length, 'email')}: ${mhvText.join(', ')}; the service ${plural(serviceGroups.length, 'email')}: ${serviceText.join(', ')}`,
    });
  }

  const kindOrder = (kind: MismatchKind) => MismatchKinds.indexOf(kind);
  mismatches.sort(
    (a, b) =>
      kindOrder(a.kind) - kindOrder(b.kind) ||
      (a.lines[0] ?? 0) - (b.lines[0] ?? 0) ||
      (a.icnLast4 ?? '').localeCompare(b.icnLast4 ?? '') ||
      (a.trackingNumbers[0] ?? '').localeCompare(b.trackingNumbers[0] ?? ''),
  );

  const comparedRows = rows.filter((row) => compared.has(packageKey(row.icn, row.trackingNumber))).length;
  const mhvOnly = mhvOnlyPackages.length;
  const summary: ShadowSummary = {
    window: { from: window.from.toISOString(), to: window.to.toISOString() },
    export: { rows: rows.length + badRows.length, badRows: badRows.length, rowsNotCompared: rows.length - comparedRows },
    packagesCompared: compared.size,
    veteransCompared: veterans.size,
    mhv: { packages: mhvPackages, emails: mhvEmails.size },
    service: { packages: servicePackages, emails: serviceEmails.size },
    matched: { packages: matched.length, veterans: veterans.size - differing.size },
    emailedByMhvOnly: { packages: mhvOnly, byReason },
    emailedByServiceOnly: { packages: serviceOnly.length },
    groupedDifferently: { veterans: groupedDifferently },
    carrierDiffers: { packages: carrierDiffers },
    emailedTwiceByMhv: { packages: twice },
    packageMismatchRate: rate(mhvOnly + serviceOnly.length, compared.size),
    veteranMismatchRate: rate(differing.size, veterans.size),
  };
  return { summary, mismatches };
}

/** The fields of a mismatch about one package, from whichever sides have it. */
function packageMismatch(m: MhvPackage | undefined, o: OurPackage | undefined): Omit<Mismatch, 'kind' | 'detail'> {
  return {
    icnLast4: last4(m?.icn ?? o?.icn ?? null),
    trackingNumbers: [m?.trackingNumber ?? o!.trackingNumber],
    lines: m?.lines ?? [],
    carrier: m?.carrier ?? o?.carrier ?? null,
    mhvSentDates: m?.sentDays ?? [],
    shippedAt: o?.shippedAt?.toISOString() ?? null,
    emailIds: o?.emailId ? [o.emailId] : [],
  };
}

function rate(part: number, whole: number): number {
  return whole === 0 ? 0 : Math.round((part / whole) * 10_000) / 10_000;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The default window: the whole UTC days from the export's first sent date to its last. */
export function exportSpan(rows: ExportRow[]): Window | undefined {
  if (rows.length === 0) return undefined;
  let min = rows[0]!.sentAt.getTime();
  let max = min;
  for (const row of rows) {
    min = Math.min(min, row.sentAt.getTime());
    max = Math.max(max, row.sentAt.getTime());
  }
  const startOfDay = (ms: number) => Date.UTC(new Date(ms).getUTCFullYear(), new Date(ms).getUTCMonth(), new Date(ms).getUTCDate());
  return { from: new Date(startOfDay(min)), to: new Date(startOfDay(max) + 86_400_000) };
}
