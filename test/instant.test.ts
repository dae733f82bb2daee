import t from 'tap';
import { calendarMillis, daysInMonth, isoInstantMillis, RealOffsetMinutes } from '../src/instant.ts';

t.test('isoInstantMillis reads every form the readers take, at its offset', async (t) => {
  const cases: [string, string][] = [
    ['2026-05-14T15:40Z', '2026-05-14T15:40:00.000Z'],
    ['2026-05-14T15:40:12Z', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T15:40:12.5Z', '2026-05-14T15:40:12.500Z'],
    ['2026-05-14T15:40:12.123456789Z', '2026-05-14T15:40:12.123Z'],
    ['2026-05-14 15:40:12', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14t15:40:12z', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T11:40:12-04:00', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T21:10:12+0530', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T17:40:12+02', '2026-05-14T15:40:12.000Z'],
    ['2026-05-15T05:40:12+14:00', '2026-05-14T15:40:12.000Z'],
    ['2028-02-29T00:00:00Z', '2028-02-29T00:00:00.000Z'],
    ['2000-02-29T00:00:00Z', '2000-02-29T00:00:00.000Z'],
  ];
  for (const [text, iso] of cases) {
    const at = isoInstantMillis(text);
    t.equal(at === undefined ? undefined : new Date(at).toISOString(), iso, text);
    // Where Date reads the text the same way, the two agree to the millisecond.
    if (!Number.isNaN(Date.parse(text))) t.equal(at, Date.parse(text), `${text}: as Date.parse reads it`);
  }
});

t.test('isoInstantMillis refuses what Date would roll over and offsets no zone has', async (t) => {
  for (const text of [
    '2026-02-30T00:00:00Z',
    '2026-02-29T00:00:00Z',
    '1900-02-29T00:00:00Z',
    '2026-04-31T00:00:00Z',
    '2026-13-01T00:00:00Z',
    '2026-00-10T00:00:00Z',
    '2026-05-00T00:00:00Z',
    '2026-05-14T24:00:00Z',
    '2026-05-14T23:60:00Z',
    '2026-05-14T23:59:60Z',
    '2026-05-14T12:00:00+14:01',
    '2026-05-14T12:00:00-15:00',
    '2026-05-14T12:00:00+99:00',
    '2026-05-14T12:00:00+05:60',
    '2026-05-14',
    '0000-01-01T00:00:00Z',
    '0026-05-14T00:00:00Z',
    '2026-05-14T12:00:00+5',
    'yesterday',
    '',
  ]) {
    t.equal(isoInstantMillis(text), undefined, text);
  }
});

t.test('calendarMillis keeps years below 100 as themselves and checks the year and offset against their limits', async (t) => {
  t.equal(new Date(calendarMillis({ year: 26, month: 5, day: 14 }, { minYear: 0 })!).toISOString(), '0026-05-14T00:00:00.000Z');
  t.equal(calendarMillis({ year: 26, month: 5, day: 14 }), undefined, 'before the year 1000 by default');
  t.equal(
    new Date(calendarMillis({ year: 2026, month: 5, day: 14, hour: 1, offsetMinutes: 120 })!).toISOString(),
    '2026-05-13T23:00:00.000Z',
  );
  t.equal(calendarMillis({ year: 2026, month: 5, day: 14, offsetMinutes: RealOffsetMinutes + 1 }), undefined, 'past ±14:00 by default');
  t.ok(
    calendarMillis({ year: 2026, month: 5, day: 14, offsetMinutes: -(23 * 60 + 59) }, { maxOffsetMinutes: 23 * 60 + 59 }),
    'a wider limit where a format allows one',
  );
  t.equal(calendarMillis({ year: 10_000, month: 1, day: 1 }), undefined, 'a year past 9999');
});

t.test('daysInMonth follows the Gregorian leap years', async (t) => {
  t.same(
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((month) => daysInMonth(2026, month)),
    [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
  );
  t.same(
    [2024, 2100, 2000, 1900].map((year) => daysInMonth(year, 2)),
    [29, 28, 29, 28],
  );
});
