// Dates and times read from text: settings, JSON dispenses, VA Notify's callbacks, CMOP's HL7 and
// MHV's export. JavaScript's Date rolls an impossible date over rather than refusing it (2026-02-30
// is March 2, T24:00 the next midnight), so a typo would silently become another day; every reader
// checks the parts here instead, by one rule.

/** Real zone offsets lie within ±14:00 (Kiribati's Line Islands). */
export const RealOffsetMinutes = 14 * 60;

/** Days in a month (1–12) of a proleptic Gregorian year. */
export function daysInMonth(year: number, month: number): number {
  if (month !== 2) return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
}

export interface CalendarTime {
  year: number;
  month: number;
  day: number;
  hour?: number;
  minute?: number;
  second?: number;
  millisecond?: number;
  /** Minutes east of UTC that the local time is given in. */
  offsetMinutes?: number;
}

/**
 * The earliest year taken by default. A date before 1000 in anything this service reads (a setting,
 * a callback, a dispense, MHV's export) is a typo for this millennium's (0026 for 2026), and
 * Postgres has no year 0: a callback dated 0000 would fail in Postgres and be retried for hours.
 */
export const EarliestYear = 1000;

/**
 * Milliseconds since the epoch of a local date and time at its offset, or undefined when a part is
 * out of range: a 30 February, an hour of 24, a second of 60, a year before `minYear`, an offset
 * past ±`maxOffsetMinutes`.
 */
export function calendarMillis(
  time: CalendarTime,
  { maxOffsetMinutes = RealOffsetMinutes, minYear = EarliestYear }: { maxOffsetMinutes?: number; minYear?: number } = {},
): number | undefined {
  const { year, month, day, hour = 0, minute = 0, second = 0, millisecond = 0, offsetMinutes = 0 } = time;
  if (year < minYear || year > 9999 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59 || Math.abs(offsetMinutes) > maxOffsetMinutes) return undefined;
  // Date.UTC reads years 0 to 99 as 1900 to 1999: such a year is set on its own.
  const local = year >= 100 ? Date.UTC(year, month - 1, day, hour, minute, second, millisecond) : yearBelow100(time);
  return local - offsetMinutes * 60_000;
}

function yearBelow100({ year, month, day, hour = 0, minute = 0, second = 0, millisecond = 0 }: CalendarTime): number {
  const date = new Date(Date.UTC(2000, month - 1, day, hour, minute, second, millisecond));
  date.setUTCFullYear(year);
  return date.getTime();
}

/**
 * An ISO 8601 date and time with its zone, as a JSON schema pattern (settings, JSON dispenses):
 * `2026-05-14T15:40Z`, `2026-05-14T11:40:12.5-04:00`, `2026-05-14T21:10:12+0530`.
 */
export const ZonedIsoPattern = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?(Z|[+-]\\d{2}:?\\d{2})$';

/**
 * `YYYY-MM-DD`, `T` or a space, `HH:MM`, optional `:SS` and a fraction, then
 * `Z`, `±HH`, `±HH:MM`, `±HHMM` or no zone at all (UTC). Each caller's own pattern says which of
 * these forms it takes.
 */
const IsoDateTime = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(?:Z|([+-])(\d{2})(?::?(\d{2}))?)?$/i;

/** An ISO 8601 date and time as milliseconds since the epoch; undefined when it is not one, or not a real one. */
export function isoInstantMillis(text: string): number | undefined {
  // One pass over the text: each callback's timestamps are read by this on the request's path.
  const m = IsoDateTime.exec(text);
  const offsetMinutes = m === null ? undefined : signedOffsetMinutes(m[8], m[9], m[10]);
  if (m === null || offsetMinutes === undefined) return undefined;
  return calendarMillis({
    year: Number(m[1]),
    month: Number(m[2]),
    day: Number(m[3]),
    hour: Number(m[4]),
    minute: Number(m[5]),
    second: Number(m[6] ?? 0),
    millisecond: fractionMillis(m[7]),
    offsetMinutes,
  });
}

/** An ISO 8601 zone (`Z`, `±HH`, `±HHMM`, `±HH:MM`, or none: UTC) in minutes east of UTC; undefined when not one. */
export function zoneOffsetMinutes(zone: string | undefined): number | undefined {
  if (zone === undefined || zone === '' || zone.toUpperCase() === 'Z') return 0;
  const parts = /^([+-])(\d{2})(?::?(\d{2}))?$/.exec(zone);
  return parts === null ? undefined : signedOffsetMinutes(parts[1], parts[2], parts[3]);
}

/** A zone's parts (`-`, `05`, `30`) in minutes east of UTC; no sign is UTC; undefined for minutes past 59. */
function signedOffsetMinutes(sign: string | undefined, hours: string | undefined, minutes: string | undefined): number | undefined {
  if (sign === undefined) return 0;
  if (Number(minutes ?? 0) > 59) return undefined;
  return (sign === '-' ? -1 : 1) * (Number(hours) * 60 + Number(minutes ?? 0));
}

/** The milliseconds of a fraction of a second's digits (`5` is 500); below a millisecond is below what a Date holds. */
export function fractionMillis(digits: string | undefined): number {
  return digits === undefined || digits === '' ? 0 : Number(digits.slice(0, 3).padEnd(3, '0'));
}
