// The tracking email's life: every state it can be in, the sets of states the code asks about, and
// every move from one state to another. The database keeps the same list in its CHECK constraint
// (tracking_email_state_check); test/tracking-email/states.test.ts holds the two equal, and holds the
// diagram in docs/design.md equal to TrackingEmailTransitions.
import type { SqlHandle } from '../db/connect.ts';

/**
 * The states that follow the final status of the email's latest notification (sql/025,
 * apply_status_event_effects): sent, and every state a status event leads to. An email queued or
 * being sent belongs to the sender, and a shadowed or resent one is never moved by a status event.
 */
export const FollowingNotificationStates = ['sent', 'delivered', 'permanent_failure', 'temporary_failure', 'failed', 'expired'] as const;

/** Every state, in the CHECK constraint's order: the sender's two, those that follow a notification, and the two no status event moves. */
export const TrackingEmailStates = ['queued', 'sending', ...FollowingNotificationStates, 'shadowed', 'resent'] as const;

export type TrackingEmailState = (typeof TrackingEmailStates)[number];

/** The states grouping creates an email in: queued to be sent, or shadowed (shadow mode: recorded, never sent). */
export const InitialStates = ['queued', 'shadowed'] as const satisfies readonly TrackingEmailState[];

export type InitialState = (typeof InitialStates)[number];

/**
 * The states the sender may claim an email in: due in the queue, or held by a send claim whose lease
 * ran out (an orphan, looked up at VA Notify before anything is sent again).
 */
export const ClaimableStates = ['queued', 'sending'] as const satisfies readonly TrackingEmailState[];

/** The states an email awaits its notification in: a status event naming it by reference adopts the notification. */
export const AwaitingNotificationStates = ClaimableStates;

/** The state a notification's final status gives its email (src/status/repository.ts, statusEffects). */
export const FinalStatusStates = [
  'delivered',
  'permanent_failure',
  'temporary_failure',
  'expired',
] as const satisfies readonly TrackingEmailState[];

export type FinalStatusState = (typeof FinalStatusStates)[number];

/** The states a status event moves an email to: those, and failed for a temporary failure with every attempt used. */
export const StatusEventStates = [...FinalStatusStates, 'failed'] as const satisfies readonly TrackingEmailState[];

/**
 * The states an email leaves no more on its own: nothing sends, replays or polls it (retention may
 * remove it). A `delivered` email can still take a late bounce, which changes its record and not
 * what happens.
 */
export const FinalStates = [
  'delivered',
  'permanent_failure',
  'failed',
  'expired',
  'shadowed',
  'resent',
] as const satisfies readonly TrackingEmailState[];

/** The states still in the service's hands: queued, being sent, sent and awaiting its status, or waiting for a replay. */
export const NonFinalStates = TrackingEmailStates.filter((state) => !(FinalStates as readonly string[]).includes(state));

/** The states an operator may resend an email from: the send failed for good, or VA Notify could not deliver it. */
export const ResendableStates = ['failed', 'permanent_failure', 'expired'] as const satisfies readonly TrackingEmailState[];

/** Where another try leads: queued again, or failed once the email has used all its attempts. */
export type RetryState = Extract<TrackingEmailState, 'queued' | 'failed'>;

export interface TrackingEmailTransition {
  from: readonly TrackingEmailState[];
  to: TrackingEmailState;
  /** The arrow's label in docs/design.md; none for a notification's final status, the most common move. */
  label?: string;
  /** What makes the move, and where. */
  by: string;
}

/** Every move an email can make (docs/design.md draws them). Creation is {@link InitialStates}. */
export const TrackingEmailTransitions: readonly TrackingEmailTransition[] = [
  { from: ['queued'], to: 'sending', label: 'claimed', by: 'the sender claims it (src/sending/repository.ts)' },
  {
    from: ['sending'],
    to: 'sending',
    label: 'lease ran out, claimed again',
    by: 'the sender claims an orphan; the sweep claims it to look it up (src/sweep/repository.ts)',
  },
  { from: ['sending'], to: 'queued', label: 'retry later, handed back, or an orphan VA Notify lacks', by: 'the sender, or the sweep' },
  {
    from: ['sending'],
    to: 'sent',
    label: 'VA Notify accepted it, or had it',
    by: 'the sender, the sweep, or a status event naming it by reference',
  },
  {
    from: ['queued'],
    to: 'sent',
    label: 'a status event names it (VA Notify had it)',
    by: 'adoptNotificationByReference (src/status/repository.ts)',
  },
  { from: ['sending'], to: 'failed', label: 'refused, or attempts used up', by: 'the sender, or the sweep' },
  ...StatusEventStates.map((to) => ({
    from: FollowingNotificationStates.filter((state) => state !== to),
    to,
    by: 'the final status of its latest notification (apply_status_event_effects, sql/025)',
  })),
  { from: ['temporary_failure'], to: 'queued', label: 'replayed', by: 'the sweep (src/sweep/repository.ts)' },
  { from: ['temporary_failure'], to: 'failed', label: 'attempts used up, not replayed', by: 'the sweep' },
  {
    from: ResendableStates,
    to: 'resent',
    label: 'resent by an operator',
    by: 'a new email is queued in its place (src/operator/actions.ts)',
  },
];

/** The diagram's arrows, as Mermaid writes them: `from --> to` or `from --> to : label`, creation first. */
export function transitionArrows(): string[] {
  return [
    ...InitialStates.map((state) => `[*] --> ${state}`),
    ...TrackingEmailTransitions.flatMap((t) => t.from.map((from) => `${from} --> ${t.to}${t.label === undefined ? '' : ` : ${t.label}`}`)),
  ];
}

/**
 * A state written into a statement as a literal, not a parameter: the planner then matches the
 * partial indexes whose predicate names a state (tracking_email_due, _leased, _replay), which a
 * generic plan for `state = $1` cannot. The type allows only the states above, so nothing else is
 * ever written in.
 */
export function stateLiteral(sql: SqlHandle, state: TrackingEmailState) {
  return sql.unsafe(`'${state}'`);
}

/** A list of states as `('a', 'b')`, for `state in ...`, written in as literals (see {@link stateLiteral}). */
export function stateList(sql: SqlHandle, states: readonly TrackingEmailState[]) {
  return sql.unsafe(`(${states.map((state) => `'${state}'`).join(', ')})`);
}
