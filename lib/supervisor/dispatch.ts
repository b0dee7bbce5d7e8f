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
import net, { type Socket } from 'node:net';
import { isHandoffMessage, type ConnMessage } from '../ipc.js';
import type { Logger } from '../telemetry/logger.js';

/** Connections that may wait for a serving worker; past it, new ones are closed at once. */
export const DISPATCH_QUEUE_MAX = 4096;
/**
 * A worker that has not acknowledged a handoff for this long is stalled (stopped, or its event
 * loop blocked): it gets no more connections while another worker answers. Those it was handed
 * are answered when it resumes, or go to another worker if it is killed as hung. An
 * acknowledgement normally takes well under a millisecond.
 */
export const STALL_MS = 100;

interface Target {
  worker: Worker;
  /** Open connections, as the worker last reported them. */
  open: number;
  /** When each handoff not yet acknowledged was sent (acks come back in order). */
  sentAt: number[];
  serving: boolean;
}

interface Pending {
  socket: Socket;
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
  host: string;
  port: number;
  guard: <A extends unknown[]>(where: string, fn: (...args: A) => void) => (...args: A) => void;
}

export class Dispatcher {
  private readonly server: net.Server;
  private readonly targets = new Map<number, Target>();
  /** Serving worker ids in the order they started serving: the order ties are broken in. */
  private order: number[] = [];
  private turn = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly waiting: Socket[] = [];
  private seq = 0;
  private closed = false;
  private waitingSince = 0;
  /** Until a first worker serves, connections waiting for one are the start-up, not news. */
  private served = false;
  private readonly counts = { accepted: 0, redispatched: 0, dropped: 0 };

  constructor(private readonly opts: DispatcherOptions) {
    this.server = net.createServer(
      { pauseOnConnect: true },
      opts.guard('a new connection', (socket: Socket) => this.onConnection(socket)),
    );
  }

  /** Binds the port; rejects with the system's error (EADDRINUSE, EACCES...). */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.opts.host, port: this.opts.port, backlog: 511 }, () => {
        this.server.off('error', reject);
        this.server.on(
          'error',
          this.opts.guard('the listening socket', (err: Error) =>
            this.opts.log.error('listening socket error', { err }),
          ),
        );
        resolve();
      });
    });
  }

  /** The workers that serve now (ready, not draining): the pool calls this on every change. */
  sync(serving: Worker[]): void {
    const ids = new Set(serving.map((w) => w.id));
    for (const w of serving) {
      const t = this.targets.get(w.id);
      if (t) t.serving = true;
      else this.targets.set(w.id, { worker: w, open: 0, sentAt: [], serving: true });
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
    this.targets.delete(workerId);
    this.order = this.order.filter((id) => id !== workerId);
    for (const [id, p] of this.pending) {
      if (p.workerId !== workerId) continue;
      this.pending.delete(id);
      this.counts.redispatched++;
      this.dispatch(p.socket);
    }
  }

  /** A message from a worker; false when it is not the dispatcher's. */
  onMessage(worker: Worker, msg: unknown): boolean {
    if (!isHandoffMessage(msg)) return false;
    const t = this.targets.get(worker.id);
    if (msg.t === 'conns') {
      if (t) t.open = msg.open;
      return true;
    }
    const p = this.pending.get(msg.id);
    if (!p || p.workerId !== worker.id) return true;
    this.pending.delete(msg.id);
    if (t) {
      t.sentAt.shift();
      t.open = msg.open;
    }
    if (msg.ok) {
      // Closes the primary's copy of the descriptor only: the worker holds its own.
      p.socket.destroy();
      return true;
    }
    // The worker drains on its own (a SIGTERM sent to it directly): nothing more for it.
    if (t) t.serving = false;
    this.order = this.order.filter((id) => id !== worker.id);
    this.counts.redispatched++;
    this.dispatch(p.socket);
    return true;
  }

  /** Stops accepting; connections still waiting for a worker are closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    for (const s of this.waiting.splice(0)) {
      this.counts.dropped++;
      s.destroy();
    }
  }

  stats(): DispatchStats {
    const perWorker = new Map<number, number>();
    for (const [id, t] of this.targets) perWorker.set(id, t.open + t.sentAt.length);
    return { ...this.counts, waiting: this.waiting.length, perWorker };
  }

  private onConnection(socket: Socket): void {
    // A paused socket reads nothing, but a reset can still surface as an error: never unheard.
    socket.on('error', () => undefined);
    this.counts.accepted++;
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.dispatch(socket);
  }

  /**
   * The serving worker with the fewest connections; among equals, the next in turn. A stalled
   * worker only when every serving worker is.
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
      if (!t?.serving) continue;
      if (skipStalled && t.sentAt.length > 0 && now - t.sentAt[0]! > STALL_MS) continue;
      if (!best || t.open + t.sentAt.length < best.open + best.sentAt.length) {
        best = t;
        bestAt = at;
      }
    }
    if (best) this.turn = bestAt + 1;
    return best;
  }

  private dispatch(socket: Socket): void {
    if (socket.destroyed) return;
    const target = this.pick();
    if (!target) {
      this.wait(socket);
      return;
    }
    const id = ++this.seq;
    this.pending.set(id, { socket, workerId: target.worker.id });
    target.sentAt.push(performance.now());
    const msg: ConnMessage = { t: 'conn', id };
    const failed = (err: Error | null) => {
      if (!err || !this.pending.has(id)) return;
      // The channel is closing (the worker is dying): the connection goes elsewhere now.
      this.pending.delete(id);
      target.sentAt.shift();
      target.serving = false;
      this.counts.redispatched++;
      this.dispatch(socket);
    };
    try {
      target.worker.send(msg, socket, { keepOpen: true }, this.opts.guard('a handoff', failed));
    } catch (err) {
      failed(err as Error);
    }
  }

  private wait(socket: Socket): void {
    if (this.closed || this.waiting.length >= DISPATCH_QUEUE_MAX) {
      this.counts.dropped++;
      socket.destroy();
      return;
    }
    if (this.waiting.length === 0) {
      this.waitingSince = performance.now();
      if (this.served) this.opts.log.warn('no worker serving: new connections wait for one');
    }
    this.waiting.push(socket);
  }

  private flushWaiting(): void {
    if (this.waiting.length === 0) return;
    this.opts.log.log(
      this.served ? 'info' : 'debug',
      'a worker serves: handing over the connections that waited',
      {
        connections: this.waiting.length,
        waited_ms: Math.round(performance.now() - this.waitingSince),
      },
    );
    for (const s of this.waiting.splice(0)) this.dispatch(s);
  }
}
