// CMOP feeds for the ingest and end-to-end benchmarks: dispense i belongs to veteran
// floor(i / perVeteran), whose dispenses come in two UPS packages. The same dispense can be written
// as an HL7 RDS^O13 message (the CMOP sample's shape), a canonical JSON event, or the row ingest
// stores, so that the service and the limits beside it handle the same data.
import { veteranIcn } from './fixtures.ts';

export interface FeedDispense {
  i: number;
  veteran: number;
  icn: string;
  mhvCorrelationId: string;
  rxNumber: string;
  trackingNumber: string;
  controlId: string;
}

export function feedDispense(i: number, perVeteran: number, rxBase = 30_000_000): FeedDispense {
  const veteran = Math.floor(i / perVeteran);
  const packageNumber = Math.floor((i % perVeteran) / 2);
  return {
    i,
    veteran,
    icn: veteranIcn(veteran),
    mhvCorrelationId: String(10_000_000 + veteran),
    rxNumber: String(rxBase + i),
    trackingNumber: `1Z999${String(veteran).padStart(10, '0')}${packageNumber % 10}`,
    controlId: `CMOP-${rxBase + i}`,
  };
}

/** One RDS^O13 message, segments ended by CR, with an SSN in PID-3 (the service masks it). */
export function hl7Message(d: FeedDispense): string {
  const ssn = `666${String(d.veteran % 1_000_000).padStart(6, '0')}`;
  return [
    `MSH|^~\\&|CMOP|CMOP-LEAVENWORTH|MHV|MHV|20260514160512||RDS^O13^RDS_O13|${d.controlId}|P|2.5|||AL|NE`,
    `PID|||${d.icn}^^^USVHA^NI~${ssn}^^^USSSA^SS~${d.mhvCorrelationId}^^^200MHS^PI||CMOPTEST^ALPHA^Q||19500101|M`,
    `ORC|RE|521-${d.rxNumber}-0||||||||||`,
    `RXD|0|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||${d.rxNumber}||||||${d.trackingNumber}`,
    `ZR2|UPS|${d.trackingNumber}|${d.rxNumber}`,
    '',
  ].join('\r');
}

export function jsonEvent(d: FeedDispense): Record<string, unknown> {
  return {
    messageId: d.controlId,
    stationNumber: '521',
    patient: { icn: d.icn, mhvCorrelationId: d.mhvCorrelationId },
    prescription: { rxNumber: d.rxNumber, fillNumber: 0, drugName: 'SIMVASTATIN 40MG TAB', ndc: '00093718098', quantity: 90 },
    dispensedAt: '2026-05-14T10:22:10Z',
    shippedAt: '2026-05-14T16:05:12Z',
    carrier: 'UPS',
    trackingNumber: d.trackingNumber,
  };
}

/** The row ingest stores for the dispense. */
export function dispenseRow(d: FeedDispense) {
  return {
    station_number: '521',
    rx_number: d.rxNumber,
    fill_number: 0,
    tracking_number: d.trackingNumber,
    carrier: 'UPS',
    drug_name: 'SIMVASTATIN 40MG TAB',
    ndc: '00093718098',
    quantity: 90,
    dispensed_at: new Date('2026-05-14T10:22:10Z'),
    shipped_at: new Date('2026-05-14T16:05:12Z'),
    patient_icn: d.icn,
    mhv_correlation_id: d.mhvCorrelationId,
    message_control_id: d.controlId,
    state: 'pending',
  };
}

/** Bodies of `perBody` consecutive dispenses starting at `first`, written by `write`. */
export function bodiesOf<T>(
  first: number,
  bodies: number,
  perBody: number,
  perVeteran: number,
  write: (ds: FeedDispense[]) => T,
  rxBase?: number,
): T[] {
  return Array.from({ length: bodies }, (_, b) =>
    write(Array.from({ length: perBody }, (_, k) => feedDispense(first + b * perBody + k, perVeteran, rxBase))),
  );
}
