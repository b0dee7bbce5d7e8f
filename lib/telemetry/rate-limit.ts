// A log limiter: a dead collector fails every export, an unreachable Redis every read, and each
// failure must not become a log line.

/** Lets one event through per interval and counts the ones it held back. */
export class RateLimiter {
  private last = -Infinity;
  private held = 0;

  constructor(
    readonly intervalMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** `ok` when this event may be reported; `suppressed` = events held back since the last one. */
  take(): { ok: boolean; suppressed: number } {
    const t = this.now();
    if (t - this.last < this.intervalMs) {
      this.held++;
      return { ok: false, suppressed: this.held };
    }
    const suppressed = this.held;
    this.held = 0;
    this.last = t;
    return { ok: true, suppressed };
  }
}

/** The failure callback of an OTLP exporter: one warning a minute, with the count held back. */
export function exportFailureWarning(
  logger: { warn(message: string, meta: Record<string, unknown>): unknown },
  what: string,
  endpoint: string,
): (err: Error | undefined) => void {
  const limiter = new RateLimiter(60_000);
  return (err) => {
    const { ok, suppressed } = limiter.take();
    if (!ok) return;
    logger.warn(`OTLP ${what} export failed (logged at most once a minute)`, {
      endpoint,
      error: err?.message ?? 'unknown error',
      ...(suppressed > 0 ? { failures_not_logged: suppressed } : {}),
    });
  };
}
