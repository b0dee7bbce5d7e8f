// The near cache of a worker (issue 14): cached values of recently read keys, kept in the
// worker, valid only while Redis tracks them for this worker (server-assisted client-side
// caching, CLIENT TRACKING; the wiring is in redis-cache.ts). This file is the bookkeeping only:
//
// - An entry is served only while tracking is on (`enabled`) and for at most `maxAgeMs` after
//   Redis last confirmed it (a read or a slide), so a key that expires in Redis before Redis's
//   own expiry cycle sends its invalidation is not served past its expiry.
// - Invalidation of a key (Redis's push, or an own write, which invalidates locally before it is
//   sent) drops the entry and cancels the reads of that key in flight; a flush (tracking lost or
//   re-established) drops everything and cancels every read in flight.
// - The race of the Redis docs (a read in flight while an invalidation of its key arrives on the
//   other connection): every read that may fill the cache takes a ticket first (`begin`), and its
//   answer is kept only if the ticket is still the key's current one and no flush happened
//   meanwhile (`complete`). An invalidation deletes the ticket, so a value read before the
//   invalidation is never cached after it.
// - Bounded: at most `max` entries, least recently used dropped first.
// - Hits mark the key for a background slide of its expiry in Redis (taken by `takeSlides`).

interface Entry {
  value: string;
  /** performance.now() past which the entry is not served (Redis must be asked again). */
  until: number;
}

/** A read's ticket: its answer is cached only if it is still the key's ticket at the answer. */
export interface Ticket {
  readonly epoch: number;
}

export class NearCache {
  private readonly entries = new Map<string, Entry>();
  private readonly tickets = new Map<string, Ticket>();
  private slides = new Set<string>();
  private epoch = 0;
  private on = false;

  constructor(
    /** Most entries kept (least recently used dropped first); > 0. */
    readonly max: number,
    /** Longest an entry is served after Redis last confirmed it (ms). */
    private readonly maxAgeMs: number,
  ) {}

  get enabled(): boolean {
    return this.on;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Tracking on or off: either way, everything cached so far is dropped. */
  setEnabled(on: boolean): void {
    this.flush();
    this.on = on;
  }

  /** The cached value of `key`, or undefined (then Redis is asked). A hit marks a slide due. */
  get(key: string): string | undefined {
    if (!this.on) return undefined;
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (performance.now() > e.until) {
      this.entries.delete(key);
      return undefined;
    }
    // Least recently used first: a hit moves the key to the end of the map's order.
    this.entries.delete(key);
    this.entries.set(key, e);
    this.slides.add(key);
    return e.value;
  }

  /** Before a read from Redis that may fill the cache; undefined when tracking is off. */
  begin(key: string): Ticket | undefined {
    if (!this.on) return undefined;
    const t: Ticket = { epoch: this.epoch };
    this.tickets.set(key, t);
    return t;
  }

  /**
   * The answer of a read that took `ticket`: cached if the ticket is still the key's (no
   * invalidation, flush or later read of the key meanwhile). null (a miss, a tombstone) and
   * reads that failed (`value` undefined) are not cached, and release the ticket.
   */
  complete(key: string, ticket: Ticket | undefined, value: string | null | undefined): void {
    if (ticket === undefined || this.tickets.get(key) !== ticket) return;
    this.tickets.delete(key);
    if (!this.on || ticket.epoch !== this.epoch) return;
    if (typeof value !== 'string') {
      this.entries.delete(key);
      return;
    }
    this.entries.delete(key);
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) {
        this.entries.delete(oldest.value);
        this.slides.delete(oldest.value);
      }
    }
    this.entries.set(key, { value, until: performance.now() + this.maxAgeMs });
  }

  /** The key changed (Redis's push, or an own write about to be sent). */
  invalidate(key: string): void {
    this.entries.delete(key);
    this.tickets.delete(key);
    this.slides.delete(key);
  }

  /** Drops every entry and cancels every read in flight. */
  flush(): void {
    this.epoch++;
    this.entries.clear();
    this.tickets.clear();
    this.slides.clear();
  }

  /** The keys hit since the last call (each once), whose expiry is to be slid in Redis. */
  takeSlides(): string[] {
    if (this.slides.size === 0) return [];
    const keys = [...this.slides];
    this.slides = new Set();
    return keys;
  }
}
