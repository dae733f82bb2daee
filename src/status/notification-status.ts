// The notification status state machine: VA Notify's email statuses plus our own `expired`, their
// order, which ones are final, and how legacy values map onto today's. The transitions themselves are
// guarded updates in SQL (apply_status_event_effects, sql/025; its current form in sql/schema.sql), which writes no status of its own: it
// orders a notification's statuses by the tables in StatusOrder, passed with every event.

/** Statuses VA Notify may still move a notification on from, in the order a notification normally passes through them. */
const NonFinalStatusList = ['created', 'sending', 'pending', 'sent'] as const;

/** Statuses after which VA Notify does nothing more with the notification. */
const FinalStatusList = [
  'delivered',
  'permanent-failure',
  'temporary-failure',
  'failed',
  'cancelled',
  'validation-failed',
  // Ours: VA Notify's retention passed without a final status (set by the fallback sweep).
  'expired',
] as const;

/** Email statuses VA Notify reports, in the order a notification normally passes through them. */
export const NotificationStatuses = [...NonFinalStatusList, ...FinalStatusList] as const;

export type NotificationStatus = (typeof NotificationStatuses)[number];

export const FinalStatusSet = new Set<NotificationStatus>(FinalStatusList);

export const NonFinalStatusSet = new Set<NotificationStatus>(NonFinalStatusList);

/** The same sets as arrays, for `= any(...)` in SQL. */
export const FinalStatuses: readonly NotificationStatus[] = [...FinalStatusSet];
export const NonFinalStatuses: readonly NotificationStatus[] = [...NonFinalStatusSet];

/** Failures that end the email: VA Notify will not deliver it, and replaying would not help. */
export const PermanentFailures = new Set<NotificationStatus>(['permanent-failure', 'failed', 'cancelled', 'validation-failed']);

export const PreferencesDeclinedReason = 'Undeliverable - Preferences declined in VA Profile';

export function isNotificationStatus(value: string): value is NotificationStatus {
  return (NotificationStatuses as readonly string[]).includes(value);
}

export function isFinal(status: NotificationStatus): boolean {
  return FinalStatusSet.has(status);
}

/**
 * How far along the normal path a non-final status is. Only breaks ties between events that carry
 * no completion time, so that a retried `created` arriving after `sending` cannot move it back.
 */
export function progressRank(status: NotificationStatus): number {
  switch (status) {
    case 'created':
      return 0;
    case 'sending':
    case 'pending':
      return 1;
    case 'sent':
      return 2;
    default:
      return 3;
  }
}

/**
 * The order a notification's current status is kept in, as the SQL that applies an event takes it
 * (p_final_statuses, p_ranked_statuses and p_ranks of apply_status_event_effects): final after
 * non-final, then the later completion, then progress rank.
 */
export const StatusOrder: { finalStatuses: string[]; rankedStatuses: string[]; ranks: number[] } = {
  finalStatuses: [...FinalStatuses],
  rankedStatuses: [...NotificationStatuses],
  ranks: NotificationStatuses.map(progressRank),
};

export interface NormalisedStatus {
  /** A known status, or the value as received when it is not one (kept, never applied). */
  status: string;
  statusReason: string | null;
  known: boolean;
}

/**
 * Maps the values VA Notify removed in December 2024 onto what it sends today: a preference decline
 * and a technical failure are both `permanent-failure` now. The reason is kept; a preference decline
 * without one gets the reason VA Notify gives such a decline today.
 */
export function normaliseStatus(status: string, statusReason: string | null | undefined): NormalisedStatus {
  const reason = statusReason ?? null;
  const value = status.trim().toLowerCase();
  if (value === 'technical-failure') return { status: 'permanent-failure', statusReason: reason, known: true };
  if (value === 'preferences-declined') {
    return { status: 'permanent-failure', statusReason: reason ?? PreferencesDeclinedReason, known: true };
  }
  if (isNotificationStatus(value)) return { status: value, statusReason: reason, known: true };
  return { status, statusReason: reason, known: false };
}
