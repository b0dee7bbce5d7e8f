// A log limiter for the OTLP exporters: a dead collector fails every export, and each failure
// must not become a log line.

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
