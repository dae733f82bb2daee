// What must be undone if a run is interrupted: scratch databases, embedded servers, child processes.
const cleanups = new Set<() => Promise<unknown>>();

/** Registers a cleanup; returns a function that unregisters it (call it once the thing is closed). */
export function onInterrupt(cleanup: () => Promise<unknown>): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

export async function runCleanups(): Promise<void> {
  const pending = [...cleanups].reverse();
  cleanups.clear();
  for (const cleanup of pending) await cleanup().catch(() => {});
}
