// CPU time spent by each party of a timed part, read from /proc: the service process (all its
// threads, the garbage collector's included), every PostgreSQL process on the machine, this driver,
// and a Kafka broker's JVM where one serves the stage. On a machine of two cores that they all share,
// a ratio between two ways of doing the same work follows their total CPU per unit more than any one
// latency, so the stages that miss a target report where that CPU went. Linux only; elsewhere the
// figures are left out.
import { readFileSync, readdirSync } from 'node:fs';

/** CPU milliseconds so far, by party. */
export interface CpuSnapshot {
  service: number;
  postgres: number;
  driver: number;
  broker: number;
  /**
   * Each PostgreSQL process's own, in a snapshot: a server that ends between two snapshots (another
   * test's embedded PostgreSQL, say) takes its CPU out of the sum, so the difference is taken per
   * process, over those alive at the second.
   */
  postgresByPid?: ReadonlyMap<number, number>;
}

/** The parties whose CPU a stage reports. */
export type CpuParty = 'service' | 'postgres' | 'driver' | 'broker';

export const NoCpu: CpuSnapshot = { service: 0, postgres: 0, driver: 0, broker: 0 };

const clockTicksPerMs = 100 / 1000; // USER_HZ is 100 on every Linux this runs on.

/**
 * The CPU a process has used; with `children`, also that of its children that have ended. A
 * PostgreSQL backend that ends between two snapshots (a pool closing its connections) would
 * otherwise take its CPU out of the sum, and the postmaster, which reaps it, is where it goes.
 */
function processCpuMs(pid: number, children = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces: utime, stime, cutime and cstime
    // are the 12th to 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    return (children ? own + Number(fields[13]) + Number(fields[14]) : own) / clockTicksPerMs;
  } catch {
    return 0; // The process ended between the listing and the read.
  }
}

function postgresPids(): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('postgres');
      } catch {
        return false;
      }
    })
    .map(Number);
}

const procReadable = (() => {
  try {
    readFileSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
})();

export function cpuAvailable(): boolean {
  return procReadable;
}

/** CPU so far by party; all zero where there is no /proc to read, so a stage measures anywhere and shows the figures only where they mean something. */
export function cpuSnapshot(servicePid?: number, brokerPid?: number): CpuSnapshot {
  if (!procReadable) return NoCpu;
  const driver = process.cpuUsage();
  const postgresByPid = new Map(postgresPids().map((pid) => [pid, processCpuMs(pid, true)]));
  return {
    service: servicePid === undefined ? 0 : processCpuMs(servicePid),
    postgres: [...postgresByPid.values()].reduce((sum, ms) => sum + ms, 0),
    postgresByPid,
    driver: (driver.user + driver.system) / 1000,
    broker: brokerPid === undefined ? 0 : processCpuMs(brokerPid),
  };
}

/** CPU milliseconds each party spent between two snapshots, per `units` (say, per 1,000-row body). */
export function cpuPer(before: CpuSnapshot, after: CpuSnapshot, units: number): CpuSnapshot {
  return {
    service: (after.service - before.service) / units,
    postgres: postgresSpent(before, after) / units,
    driver: (after.driver - before.driver) / units,
    broker: (after.broker - before.broker) / units,
  };
}

function postgresSpent(before: CpuSnapshot, after: CpuSnapshot): number {
  if (before.postgresByPid === undefined || after.postgresByPid === undefined) return after.postgres - before.postgres;
  let spent = 0;
  for (const [pid, ms] of after.postgresByPid) spent += ms - (before.postgresByPid.get(pid) ?? 0);
  return spent;
}

/** Two parts' CPU as one (the rounds of a stage that alternates with its limit). */
export function cpuSum(a: CpuSnapshot, b: CpuSnapshot): CpuSnapshot {
  return { service: a.service + b.service, postgres: a.postgres + b.postgres, driver: a.driver + b.driver, broker: a.broker + b.broker };
}

const PartyNames: Record<CpuParty, string> = {
  service: 'service',
  postgres: 'Postgres',
  driver: 'driver',
  broker: 'Kafka broker',
};

export const cpuTotal = (cpu: CpuSnapshot, parties: readonly CpuParty[]) => parties.reduce((sum, party) => sum + cpu[party], 0);

/** `service 30 ms + Postgres 15 ms + driver 5 ms = 50 ms`, leaving out a party that did not take part. */
export function cpuText(cpu: CpuSnapshot, parties: readonly CpuParty[]): string {
  return `${parties.map((party) => `${PartyNames[party]} ${cpu[party].toFixed(1)}`).join(' + ')} = ${cpuTotal(cpu, parties).toFixed(1)} ms`;
}
