// Rows as the service's stages leave them, written straight into the tables for tests of the later
// stages: dispenses (a pending one names its veteran's draft, as ingest stores it), tracking emails
// and notifications. Fields are the columns; each has a default, so a test names only what it is about.
import { randomUUID } from 'node:crypto';
import type { SqlHandle } from '../../src/db/connect.ts';
import type { DispenseRecord } from '../../src/ingest/dispense.ts';
import { withDrafts } from './drafts.ts';

type Timestamp = Date | string;

export interface DispenseFixture {
  patient_icn: string | null;
  tracking_number: string;
  /** Default: the next of a sequence, so that dispenses of one test never collide. */
  rx_number?: string;
  station_number?: string;
  fill_number?: number;
  carrier?: string;
  drug_name?: string | null;
  mhv_correlation_id?: string | null;
  shipped_at?: Timestamp | null;
  dispensed_at?: Timestamp | null;
  state?: string;
  state_reason?: string | null;
  /** A grouped dispense's tracking email; a pending one's draft when not given. */
  tracking_email_id?: string | null;
  /** How long ago the dispense arrived; grouping waits for a quiet period after the newest. */
  arrived_minutes_ago?: number;
}

let rxSequence = 9_000_000;

/** Inserts the dispenses in one statement; returns their ids in the order given. */
export async function insertDispenses(sql: SqlHandle, dispenses: DispenseFixture[]): Promise<number[]> {
  const rows = dispenses.map((d) => ({
    station_number: d.station_number ?? '521',
    rx_number: d.rx_number ?? String(rxSequence++),
    fill_number: d.fill_number ?? 0,
    tracking_number: d.tracking_number,
    carrier: d.carrier ?? 'UPS',
    drug_name: d.drug_name === undefined ? 'SIMVASTATIN 40MG TAB' : d.drug_name,
    patient_icn: d.patient_icn,
    mhv_correlation_id: d.mhv_correlation_id === undefined ? '10123456' : d.mhv_correlation_id,
    shipped_at: d.shipped_at === undefined ? new Date('2026-05-14T16:00:00Z') : d.shipped_at,
    dispensed_at: d.dispensed_at ?? null,
    state: d.state ?? 'pending',
    state_reason: d.state_reason ?? null,
    tracking_email_id: d.tracking_email_id ?? null,
    created_at: new Date(Date.now() - (d.arrived_minutes_ago ?? 120) * 60_000),
  }));
  const inserted = await sql<{ id: number }[]>`insert into medication_dispense ${sql(await withDrafts(sql, rows))} returning id`;
  return inserted.map((r) => r.id);
}

export interface TrackingEmailFixture {
  id?: string;
  patient_icn?: string;
  mhv_correlation_id?: string | null;
  personalisation?: Record<string, unknown>;
  package_count?: number;
  prescription_count?: number;
  state?: string;
  attempts?: number;
  created_at?: Timestamp;
  updated_at?: Timestamp;
}

/** A tracking email as grouping writes it (queued, never sent) unless the fixture says otherwise; returns its id. */
export async function insertTrackingEmail(sql: SqlHandle, email: TrackingEmailFixture = {}): Promise<string> {
  const row = {
    ...(email.id !== undefined && { id: email.id }),
    patient_icn: email.patient_icn ?? icn(1),
    mhv_correlation_id: email.mhv_correlation_id ?? null,
    personalisation: sql.json((email.personalisation ?? {}) as Parameters<typeof sql.json>[0]),
    package_count: email.package_count ?? 1,
    prescription_count: email.prescription_count ?? 1,
    state: email.state ?? 'queued',
    attempts: email.attempts ?? 0,
    ...(email.created_at !== undefined && { created_at: email.created_at }),
    ...(email.updated_at !== undefined && { updated_at: email.updated_at }),
  };
  const [inserted] = await sql<{ id: string }[]>`insert into tracking_email ${sql(row)} returning id`;
  return inserted!.id;
}

export interface NotificationFixture {
  id?: string;
  /** The send attempt of the tracking email this notification is. */
  attempt?: number;
  created_at?: Timestamp;
  last_event_at?: Timestamp;
  status_received_at?: Timestamp;
}

/** A notification as the sender records a send VA Notify accepted; returns its id. */
export async function insertNotification(sql: SqlHandle, trackingEmailId: string, notification: NotificationFixture = {}): Promise<string> {
  const row = {
    id: notification.id ?? randomUUID(),
    tracking_email_id: trackingEmailId,
    attempt: notification.attempt ?? 1,
    ...(notification.created_at !== undefined && { created_at: notification.created_at }),
    ...(notification.last_event_at !== undefined && { last_event_at: notification.last_event_at }),
    ...(notification.status_received_at !== undefined && { status_received_at: notification.status_received_at }),
  };
  await sql`insert into notification ${sql(row)}`;
  return row.id;
}

/** An ICN of the documented shape (ten digits, V, six digits) from a number. */
export function icn(n: number): string {
  return `10${String(n).padStart(8, '0')}V${String(n % 1_000_000).padStart(6, '0')}`;
}

/** A dispense as ingest hands it to its repository: a pending UPS fill at station 521, with the fields given. */
export function dispenseRecord(rxNumber: string, overrides: Partial<DispenseRecord> = {}): DispenseRecord {
  return {
    stationNumber: '521',
    rxNumber,
    fillNumber: 0,
    trackingNumber: `1Z${rxNumber}`,
    carrier: 'UPS',
    drugName: null,
    ndc: null,
    quantity: null,
    dispensedAt: null,
    shippedAt: null,
    veteranIcn: '1012345678V123456',
    mhvCorrelationId: null,
    messageControlId: null,
    state: 'pending',
    stateReason: null,
    ...overrides,
  };
}
