// Advisory lock keys, in one place so that no two uses collide.
export const AdvisoryLock = {
  migrate: 727_001,
  /** One grouping run at a time across all instances: a veteran's dispenses are never split between two runs. */
  grouping: 727_002,
  /**
   * Namespace of the per-notification locks (two-key form: (namespace, hash of the id)) that order a
   * callback and the sender's commit of the same notification id.
   */
  notification: 727_010,
  /** One fallback sweep at a time across all instances. */
  sweep: 727_003,
  /** One decision on the packages held at the cut-over at a time. */
  cutoverRelease: 727_004,
  /** One retention run at a time across all instances. */
  retention: 727_005,
} as const;
