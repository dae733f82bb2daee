// The tracking email's states and moves have one home, src/tracking-email/states.ts: the database's
// CHECK constraints, the status SQL and the diagram in docs/design.md must say what it says.
import { readFile } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { MedicationDispenseStates } from '../../src/ingest/dispense.ts';
import { NotificationStatuses, StatusOrder, FinalStatuses, progressRank } from '../../src/status/notification-status.ts';
import {
  ClaimableStates,
  FinalStates,
  FollowingNotificationStates,
  InitialStates,
  NonFinalStates,
  StatusEventStates,
  TrackingEmailStates,
  TrackingEmailTransitions,
  transitionArrows,
} from '../../src/tracking-email/states.ts';
import { testDatabase } from '../support/database.ts';

/** The values of a `CHECK (col = ANY (ARRAY['a'::text, ...]))` constraint, as Postgres writes it back. */
async function checkedValues(t: Test, sql: Awaited<ReturnType<typeof testDatabase>>['sql'], constraint: string): Promise<string[]> {
  const [row] = await sql<{ definition: string }[]>`
    select pg_get_constraintdef(oid) as definition from pg_constraint where conname = ${constraint}`;
  t.ok(row, `${constraint} exists`);
  return [...row!.definition.matchAll(/'([^']+)'::text/g)].map((m) => m[1]!);
}

t.test('the database allows exactly the states the module lists', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  t.same(await checkedValues(t, sql, 'tracking_email_state_check'), [...TrackingEmailStates]);
  t.same(await checkedValues(t, sql, 'medication_dispense_state_check'), [...MedicationDispenseStates]);
});

t.test('the status SQL moves emails in the states the module names, and takes the status order from TypeScript', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  const [fn] = await sql<{ definition: string; arguments: string }[]>`
    select pg_get_functiondef(p.oid) as definition, pg_get_function_arguments(p.oid) as arguments
      from pg_proc p where p.proname = 'apply_status_event_effects'`;
  const body = fn!.definition;
  const following = /t\.state in \(([^)]*)\)/.exec(body);
  t.ok(following, 'the email update names the states it moves emails in');
  t.same(
    [...following![1]!.matchAll(/'([^']+)'/g)].map((m) => m[1]),
    [...FollowingNotificationStates],
  );
  // Every email state the function writes or compares is one of the module's.
  const written = [...body.matchAll(/(?:state = case when [^\n]*? then|p_email_state =) '([a-z_]+)'/g)].map((m) => m[1]!);
  t.ok(written.length > 0);
  for (const state of written) t.ok((TrackingEmailStates as readonly string[]).includes(state), `${state} is a tracking email state`);
  t.ok(
    (StatusEventStates as readonly string[]).includes('failed') && written.includes('failed'),
    'a temporary failure with its attempts used fails the email',
  );
  // The order of statuses is an argument, never written in the SQL.
  for (const argument of ['p_final_statuses text[]', 'p_ranked_statuses text[]', 'p_ranks integer[]']) t.match(fn!.arguments, argument);
  t.same(StatusOrder.rankedStatuses, [...NotificationStatuses]);
  t.same(StatusOrder.ranks, NotificationStatuses.map(progressRank));
  t.same(StatusOrder.finalStatuses, [...FinalStatuses]);
  // (`pending` and `delivered` are AAL and email states too.)
  t.notOk(
    /'(created|permanent-failure|temporary-failure|validation-failed|cancelled)'/.test(body),
    'no notification status written in the function',
  );
});

t.test('the named sets are sets of the states, and every move is between them', async (t) => {
  const all = new Set<string>(TrackingEmailStates);
  t.equal(all.size, TrackingEmailStates.length, 'no state listed twice');
  for (const set of [InitialStates, ClaimableStates, FinalStates, NonFinalStates, FollowingNotificationStates, StatusEventStates]) {
    for (const state of set) t.ok(all.has(state), `${state} is a state`);
  }
  t.same([...FinalStates, ...NonFinalStates].sort(), [...TrackingEmailStates].sort(), 'every state is final or not, once');
  const reached = new Set<string>(InitialStates);
  for (let grew = true; grew; ) {
    grew = false;
    for (const move of TrackingEmailTransitions) {
      if (move.from.some((from) => reached.has(from)) && !reached.has(move.to)) {
        reached.add(move.to);
        grew = true;
      }
    }
  }
  t.same([...reached].sort(), [...TrackingEmailStates].sort(), 'every state is reached from creation');
  // Nothing moves a resent or shadowed email.
  t.notOk(TrackingEmailTransitions.some((move) => move.from.includes('resent') || move.from.includes('shadowed')));
});

t.test("the diagram in docs/design.md draws exactly the module's moves", async (t) => {
  const design = await readFile(new URL('../../docs/design.md', import.meta.url), 'utf8');
  const section = design.slice(design.indexOf("## The tracking email's states"));
  const block = /```mermaid\nstateDiagram-v2\n([\s\S]*?)```/.exec(section);
  t.ok(block, 'the section holds a Mermaid state diagram');
  const drawn = block![1]!
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  t.same(drawn, transitionArrows(), 'redraw the diagram from transitionArrows() when the moves change');
});
