// SERVICE_SCHEDULING=leastconn: the primary owns the listening socket and hands each accepted
// connection to the serving worker with the fewest open connections (ties in turn).
//
// Why not node:cluster's round-robin: it hands a connection over and forgets it, so one sent to a
// worker that dies before taking it hangs until the client gives up, and it closes the listening
// socket when the last worker is gone. Here a connection stays the primary's until the worker
// acknowledges it (its copy of the descriptor is kept open), so a worker that dies first simply
// never had it: it goes to another. A worker that drains gets nothing new: nothing to close, no
// race with a listener. The port stays open while every worker restarts: connections wait, paused
// (the primary never reads a byte), until one serves.
import type { Worker } from 'node:cluster';
import type { Logger } from '../telemetry/logger.js';
import type { HandoffAnswer, HandoffEvents, SendFailure, Transport } from './handoff.js';

/** Connections that may wait for a serving worker; past it, new ones are closed at once. */
export const DISPATCH_QUEUE_MAX = 4096;
/**
 * A worker that has not acknowledged a handoff for this long is stalled (stopped, or its event
 * loop blocked): it gets no more connections while another worker answers. Those it was handed
 * are answered when it resumes, or go to another worker if it is killed as hung. An
 * acknowledgement normally takes well under a millisecond.
 */
export const STALL_MS = 100;
/** Retries of connections that no worker could take (every channel full), backed off to 1 s. */
const RETRY_MAX_MS = 1000;

interface Target {
  worker: Worker;
  /** Open connections, as the worker last reported them. */
  open: number;
  /** When each handoff not yet acknowledged was sent (acks come back in order). */
  sentAt: number[];
  serving: boolean;
  /** It refused a connection: it drains on its own, unknown to the pool; never a target again. */
  refused: boolean;
  /** Its channel was full: nothing more for it until then. */
  fullUntil: number;
}

interface Pending<C> {
  conn: C;
  workerId: number;
}

export interface DispatchStats {
  /** Connections accepted from the listening socket. */
  accepted: number;
  /** Handed to a worker again because the first one died or was draining before taking it. */
  redispatched: number;
  /** Closed unserved: the waiting queue was full, or the service stopped while they waited. */
  dropped: number;
  /** Waiting now for a serving worker. */
  waiting: number;
  /** Open connections per worker id (handed over and not yet acknowledged included). */
  perWorker: Map<number, number>;
}

export interface DispatcherOptions {
  log: Logger;
  guard: <A extends unknown[]>(where: string, fn: (...args: A) => void) => (...args: A) => void;
}

export class Dispatcher<C = unknown> {
  private readonly targets = new Map<number, Target>();
  /** Serving worker ids in the order they started serving: the order ties are broken in. */
  private order: number[] = [];
  private turn = 0;
  private readonly pending = new Map<number, Pending<C>>();
  private readonly waiting: C[] = [];
  private seq = 0;
  private closed = false;
  /**
   * Since when connections wait (0: they do not): one episode, one warning, one line at its
   * end. It ends with the first connection a worker takes once none waits, not when the waiting
   * ones are sent, since a full channel's refusal comes after the send.
   */
  private waitingSince = 0;
  /** The episode began before any worker served: the start-up, logged at debug. */
  private waitingAtStart = false;
  /** Until a first worker serves, connections waiting for one are the start-up, not news. */
  private served = false;
  private retryMs = 0;
  private retryTimer?: NodeJS.Timeout;
  private readonly counts = { accepted: 0, redispatched: 0, dropped: 0 };

  constructor(
    readonly transport: Transport<C>,
    private readonly opts: DispatcherOptions,
  ) {}

  /** Binds the port; rejects with the system's error (EADDRINUSE, EACCES...). */
  listen(): Promise<void> {
    const events: HandoffEvents<C> = {
      connection: (conn) => this.onConnection(conn),
      ack: (workerId, id, answer, open) => this.onAck(workerId, id, answer, open),
      count: (workerId, open) => {
        const t = this.targets.get(workerId);
        if (t) t.open = open;
      },
    };
    return this.transport.listen(events);
  }

  /** The workers that serve now (ready, not draining): the pool calls this on every change. */
  sync(serving: Worker[]): void {
    const ids = new Set<number>();
    for (const w of serving) {
      const t = this.targets.get(w.id);
      if (t?.refused) continue;
      ids.add(w.id);
      if (t) t.serving = true;
      else
        this.targets.set(w.id, {
          worker: w,
          open: 0,
          sentAt: [],
          serving: true,
          refused: false,
          fullUntil: 0,
        });
    }
    for (const [id, t] of this.targets) if (!ids.has(id)) t.serving = false;
    this.order = [
      ...this.order.filter((id) => ids.has(id)),
      ...[...ids].filter((id) => !this.order.includes(id)),
    ];
    if (this.order.length > 0) {
      this.flushWaiting();
      this.served = true;
    }
  }

  /** A worker process is gone: what it had not acknowledged goes to another worker. */
  gone(workerId: number): void {
    this.transport.gone(workerId);
    this.targets.delete(workerId);
    this.order = this.order.filter((id) => id !== workerId);
    for (const [id, p] of this.pending) {
      if (p.workerId !== workerId) continue;
      this.pending.delete(id);
      this.counts.redispatched++;
      this.dispatch(p.conn);
    }
  }

  /** A cluster message from a worker; false when it is not the dispatcher's. */
  onMessage(worker: Worker, msg: unknown): boolean {
    return this.transport.onMessage(worker, msg);
  }

  /** Stops accepting; connections still waiting for a worker are closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.transport.close();
    for (const c of this.waiting.splice(0)) {
      this.counts.dropped++;
      this.transport.release(c);
    }
  }

  stats(): DispatchStats {
    const perWorker = new Map<number, number>();
    for (const [id, t] of this.targets) perWorker.set(id, t.open + t.sentAt.length);
    return { ...this.counts, waiting: this.waiting.length, perWorker };
  }

  private onConnection(conn: C): void {
    this.counts.accepted++;
    if (this.closed) {
      this.transport.release(conn);
      return;
    }
    this.dispatch(conn);
  }

  private onAck(workerId: number, id: number, answer: HandoffAnswer, open: number): void {
    const p = this.pending.get(id);
    if (!p || p.workerId !== workerId) return;
    this.pending.delete(id);
    const t = this.targets.get(workerId);
    if (t) {
      t.sentAt.shift();
      t.open = open;
    }
    if (answer === 'ok') {
      this.transport.release(p.conn);
      if (this.waitingSince > 0 && this.waiting.length === 0) this.waitedNoMore();
      return;
    }
    if (answer === 'retry') {
      // Out of descriptors: another worker for now.
      if (t) t.fullUntil = performance.now() + STALL_MS;
    } else {
      // The worker drains on its own (a SIGTERM sent to it directly): nothing more for it, even
      // when the pool, which does not know, lists it again as serving.
      if (t) {
        t.serving = false;
        t.refused = true;
      }
      this.order = this.order.filter((id) => id !== workerId);
    }
    this.counts.redispatched++;
    this.dispatch(p.conn);
  }

  /**
   * The serving worker with the fewest connections; among equals, the next in turn. A stalled
   * worker only when every serving worker is; one whose channel is full, never.
   */
  private pick(): Target | undefined {
    const now = performance.now();
    return this.pickFrom(now, true) ?? this.pickFrom(now, false);
  }

  private pickFrom(now: number, skipStalled: boolean): Target | undefined {
    const n = this.order.length;
    let best: Target | undefined;
    let bestAt = 0;
    for (let i = 0; i < n; i++) {
      const at = (this.turn + i) % n;
      const t = this.targets.get(this.order[at]!);
      if (!t?.serving || t.fullUntil > now) continue;
      if (skipStalled && t.sentAt.length > 0 && now - t.sentAt[0]! > STALL_MS) continue;
      if (!best || t.open + t.sentAt.length < best.open + best.sentAt.length) {
        best = t;
        bestAt = at;
      }
    }
    if (best) this.turn = bestAt + 1;
    return best;
  }

  private dispatch(conn: C): void {
    if (this.transport.isClosed(conn)) return;
    const target = this.pick();
    if (!target) {
      this.wait(conn);
      return;
    }
    // Ids travel as Int32: they wrap (one still pending 2^31 handoffs later is not plausible).
    this.seq = this.seq >= 0x7fffffff ? 1 : this.seq + 1;
    const id = this.seq;
    this.pending.set(id, { conn, workerId: target.worker.id });
    target.sentAt.push(performance.now());
    this.transport.send(target.worker, id, conn, (why: SendFailure) => {
      if (!this.pending.has(id)) return;
      this.pending.delete(id);
      target.sentAt.pop();
      // Full: the worker has not read its channel lately; gone: it is dying. Either way the
      // connection goes elsewhere now.
      if (why === 'full') target.fullUntil = performance.now() + STALL_MS;
      else target.serving = false;
      this.counts.redispatched++;
      this.dispatch(conn);
    });
  }

  private wait(conn: C): void {
    if (this.closed || this.waiting.length >= DISPATCH_QUEUE_MAX) {
      this.counts.dropped++;
      this.transport.release(conn);
      return;
    }
    if (this.waitingSince === 0) {
      this.waitingSince = performance.now();
      this.waitingAtStart = !this.served;
      if (this.order.length > 0)
        this.opts.log.warn(
          "no serving worker's channel takes more now (none reads it): new connections wait",
        );
      else if (this.served) this.opts.log.warn('no worker serving: new connections wait for one');
    }
    this.waiting.push(conn);
    // Workers serve but none can take it now (every channel full): try again, backed off.
    if (this.order.length > 0 && !this.retryTimer) {
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs ? this.retryMs * 2 : STALL_MS);
      this.retryTimer = setTimeout(
        this.opts.guard('a handoff retry', () => {
          this.retryTimer = undefined;
          this.flushWaiting();
        }),
        this.retryMs,
      );
      this.retryTimer.unref();
    }
  }

  private flushWaiting(): void {
    if (this.waiting.length === 0) {
      this.retryMs = 0;
      return;
    }
    for (const c of this.waiting.splice(0)) this.dispatch(c);
  }

  private waitedNoMore(): void {
    this.opts.log.log(
      this.waitingAtStart ? 'debug' : 'info',
      'a worker takes connections again: none waits',
      { waited_ms: Math.round(performance.now() - this.waitingSince) },
    );
    this.waitingSince = 0;
    this.retryMs = 0;
  }
}
