// Pure supervisor decisions: restart backoff, crash budget, exit reasons. No processes here.

export interface RestartPolicy {
  /** Delay after the second crash in a row (ms); doubles per further crash. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** A worker up at least this long is stable: its crash starts a fresh streak. */
  stableMs: number;
  /** More unstable crashes than this within windowMs exceed the budget. */
  budget: number;
  windowMs: number;
}

/**
 * Backoff for the n-th crash in a row (n >= 1): the first is replaced at once, then
 * base * 2^(n-2) capped at max, with "equal jitter" (between half and all of it).
 */
export function restartDelay(
  streak: number,
  p: RestartPolicy,
  random: () => number = Math.random,
): number {
  if (streak <= 1) return 0;
  const exp = Math.min(p.backoffMaxMs, p.backoffBaseMs * 2 ** Math.min(30, streak - 2));
  return Math.round(exp / 2 + random() * (exp / 2));
}

export interface CrashDecision {
  /** Counted against the budget (the worker was not yet stable). */
  unstable: boolean;
  streak: number;
  delayMs: number;
  budgetExceeded: boolean;
  /** Unstable crashes inside the window, this one included. */
  recent: number;
}

/** Remembers crashes; feed it every crash of a ready worker, get the decision back. */
export class CrashTracker {
  private unstableAt: number[] = [];
  private streak = 0;
  private lastCrashAt = -Infinity;

  constructor(
    private readonly policy: RestartPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  record(now: number, uptimeMs: number): CrashDecision {
    const unstable = uptimeMs < this.policy.stableMs;
    // A quiet period as long as the stable time resets the streak.
    if (!unstable || now - this.lastCrashAt >= this.policy.stableMs) this.streak = 0;
    this.streak++;
    this.lastCrashAt = now;
    if (unstable) this.unstableAt.push(now);
    this.unstableAt = this.unstableAt.filter((t) => now - t < this.policy.windowMs);
    const recent = this.unstableAt.length;
    return {
      unstable,
      streak: this.streak,
      delayMs: restartDelay(this.streak, this.policy, this.random),
      budgetExceeded: recent > this.policy.budget,
      recent,
    };
  }
}

/** How a worker's exit reads in a log line. */
export function describeExit(
  code: number | null,
  signal: string | null,
  bySupervisor = false,
): string {
  if (signal && bySupervisor) return `killed by ${signal} (sent by the supervisor)`;
  if (signal === 'SIGKILL') return 'killed by SIGKILL, possibly out of memory';
  if (signal) return `killed by ${signal}`;
  if (code === 0) return 'exited with code 0';
  return `exited with code ${code ?? 'unknown'}`;
}

/** The smallest delay of a retry that is not a first crash (fork, recycle): never a tight loop. */
export const RETRY_FLOOR_MS = 250;

/**
 * Backoff for the n-th failed attempt in a row (n >= 1) of something that is retried rather
 * than replaced at once (a fork that failed, a recycle whose replacement did not boot): the
 * floor doubled per attempt, capped, with equal jitter. A floor even when the base is 0.
 */
export function retryDelay(
  attempt: number,
  p: Pick<RestartPolicy, 'backoffBaseMs' | 'backoffMaxMs'>,
  random: () => number = Math.random,
): number {
  const base = Math.max(RETRY_FLOOR_MS, p.backoffBaseMs);
  const cap = Math.max(base, p.backoffMaxMs);
  const exp = Math.min(cap, base * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * How late a periodic check ran. A check due every `intervalMs` that runs much later means the
 * primary itself did not run (SIGSTOP of the group, docker pause, a VM suspend, a blocked loop):
 * the workers' silence over that time says nothing about them.
 */
export function checkWasLate(gapMs: number, intervalMs: number): boolean {
  return gapMs > Math.max(1000, intervalMs * 4);
}
