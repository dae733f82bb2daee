// A dispense event as the rest of the service sees it, whichever feed (HL7 v2, JSON, later Kafka)
// it arrived on, and the small rules every feed shares.

/**
 * Every state of a stored dispense (medication_dispense_state_check; test/tracking-email/states.test.ts
 * holds the two equal): pending until grouping puts it in a tracking email (grouped) or sets it aside
 * at the cut-over (excluded, held_for_cutover); cancelled and unprocessable from arrival on.
 */
export const MedicationDispenseStates = ['pending', 'grouped', 'cancelled', 'unprocessable', 'excluded', 'held_for_cutover'] as const;
export type MedicationDispenseState = (typeof MedicationDispenseStates)[number];

/** The states a dispense is stored in when it arrives; grouping moves it on from pending. */
const IngestedDispenseStates = ['pending', 'cancelled', 'unprocessable'] as const satisfies readonly MedicationDispenseState[];
export type IngestedDispenseState = (typeof IngestedDispenseStates)[number];

export interface DispenseRecord {
  stationNumber: string;
  rxNumber: string;
  fillNumber: number;
  /** '' when CMOP sent none (a cancelled fill). */
  trackingNumber: string;
  /** Normalised by {@link normaliseCarrier}. */
  carrier: string;
  drugName: string | null;
  ndc: string | null;
  quantity: number | null;
  dispensedAt: Date | null;
  shippedAt: Date | null;
  veteranIcn: string | null;
  mhvCorrelationId: string | null;
  /** HL7 MSH-10 or the JSON messageId: lets an operator find the message a row came from. */
  messageControlId: string | null;
  state: IngestedDispenseState;
  stateReason: string | null;
}

/**
 * The longest value each stored text field may hold, whichever feed it came on: the key's values
 * must fit the unique index on (station, Rx number, fill, tracking number) (Postgres refuses a key
 * over about 2,700 bytes, and the whole statement with it), and every value must stay readable in
 * an email. The JSON schema and the HL7 reader both refuse a longer value, event by event.
 */
export const FieldLimits = {
  stationNumber: 10,
  rxNumber: 40,
  trackingNumber: 60,
  carrier: 40,
  drugName: 200,
  mhvCorrelationId: 40,
  messageControlId: 200,
  stateReason: 500,
} as const;

/** Ten digits, `V`, six-digit checksum: the VA's Integration Control Number. */
export const IcnPattern = '^[0-9]{10}V[0-9]{6}$';
const Icn = new RegExp(IcnPattern);

export function isIcn(value: string): boolean {
  return Icn.test(value);
}

/** The identity of a dispense event: the same event arriving twice is the same event. */
export function dispenseKey(d: Pick<DispenseRecord, 'stationNumber' | 'rxNumber' | 'fillNumber' | 'trackingNumber'>): string {
  return JSON.stringify([d.stationNumber, d.rxNumber, d.fillNumber, d.trackingNumber]);
}

const CarrierAliases: Record<string, string> = {
  UPS: 'UPS',
  UNITEDPARCELSERVICE: 'UPS',
  USPS: 'USPS',
  USPOSTALSERVICE: 'USPS',
  UNITEDSTATESPOSTALSERVICE: 'USPS',
  USMAIL: 'USPS',
  FEDEX: 'FEDEX',
  FEDERALEXPRESS: 'FEDEX',
  DHL: 'DHL',
  DHLEXPRESS: 'DHL',
};

/**
 * The carrier as the tracking email names it: the four carriers CMOP uses under one spelling each
 * (so "FedEx", "FED EX" and "Federal Express" all link to FedEx tracking), anything else as given
 * but uppercased, and a blank carrier as `UNK` (CMOP's "carrier unknown").
 */
export function normaliseCarrier(value: string | null | undefined): string {
  const given = (value ?? '').trim().toUpperCase();
  if (given === '') return 'UNK';
  return CarrierAliases[given.replace(/[^A-Z0-9]/g, '')] ?? given;
}

/** An NDC in any of its printed forms (10 or 11 digits, with or without hyphens); else null. */
export function normaliseNdc(value: string | null | undefined): string | null {
  const given = (value ?? '').trim();
  if (!/^[0-9]{4,5}-?[0-9]{3,4}-?[0-9]{1,2}$/.test(given)) return null;
  const digits = given.replace(/-/g, '');
  return digits.length === 10 || digits.length === 11 ? given : null;
}
