// SERVICE_SCHEDULING=leastconn over native/handoff.c (see handoff.ts). The primary accepts in
// batches from its own listening socket and sends each worker its share of a batch in one
// sendmsg, descriptors attached, on a socketpair made for that worker at its fork (the worker
// finds its end at descriptor HANDOFF_CHANNEL_FD). The worker acknowledges a batch in one message.
// The primary keeps each descriptor open until its acknowledgement: a worker that dies first
// never had the connection.
//
// The primary does not poll the channels: an acknowledgement that woke it would cost a wake-up of
// its own per connection (about a tenth of a worker's CPU per connection, in the sender's
// sendmsg). It reads them when it wakes to accept, and from a timer: every ACK_READ_MS while a
// handoff is unacknowledged, every COUNT_READ_MS otherwise (the count reports after closes).
// A worker that dies is seen by its exit, not by its channel.
import type { Worker } from 'node:cluster';
import { isIP } from 'node:net';
import { getSystemErrorName } from 'node:util';
import {
  HANDOFF_BATCH,
  HANDOFF_CHANNEL_FD,
  HANDOFF_COUNT,
  HANDOFF_OK,
  HANDOFF_REFUSED,
  HANDOFF_RETRY,
  CHANNEL_GONE,
  type NativeHandoff,
  type Watch,
} from '../native-handoff.js';
import type {
  HandoffAnswer,
  HandoffEvents,
  SendFailure,
  Transport,
  TransportOptions,
} from './handoff.js';

/** The first retry after accept fails for want of descriptors or memory; doubled up to 1 s. */
const ACCEPT_RETRY_MS = 10;
const ACCEPT_RETRY_MAX_MS = 1000;
const ANSWERS: Record<number, HandoffAnswer> = {
  [HANDOFF_OK]: 'ok',
  [HANDOFF_REFUSED]: 'refused',
  [HANDOFF_RETRY]: 'retry',
};
/** How late an acknowledgement may be read when no connection arrives (the stall limit is 100). */
const ACK_READ_MS = 10;
const COUNT_READ_MS = 100;
/** Under load, how old the count reports may be when a worker is chosen (workers send them 20 ms apart at most). */
const COUNT_FRESH_MS = 20;

interface Channel {
  workerId: number;
  fd: number;
  /** Connections sent and not yet acknowledged. */
  unacked: number;
  /** Its open connections, as it last said: while any, closes may be reported. */
  open: number;
}

interface Outgoing {
  ids: number[];
  fds: number[];
  failed: ((why: SendFailure) => void)[];
}

function systemError(syscall: string, errno: number, where: string): NodeJS.ErrnoException {
  const code = getSystemErrorName(errno);
  return Object.assign(new Error(`${syscall} ${code} ${where}`), { code, errno, syscall });
}

export class NativeTransport implements Transport<number> {
  readonly kind = 'native';
  private listenFd = -1;
  private listenWatch?: Watch;
  private events?: HandoffEvents<number>;
  private readonly channels = new Map<number, Channel>();
  private readonly outbox = new Map<Worker, Outgoing>();
  private flushQueued = false;
  private retryMs = 0;
  private retryTimer?: NodeJS.Timeout;
  private closed = false;
  private readTimer?: NodeJS.Timeout;
  private readTimerMs = 0;
  private readAllAt = 0;

  constructor(
    private readonly native: NativeHandoff,
    private readonly opts: TransportOptions,
  ) {}

  async listen(events: HandoffEvents<number>): Promise<void> {
    this.events = events;
    const { host, port } = this.opts;
    // As net.Server.listen resolves a host name: the first address the system gives. An address
    // (the usual case) needs no resolver, which stays unloaded in the primary.
    const literal = isIP(host);
    const { address, family } = literal
      ? { address: host, family: literal }
      : await (await import('node:dns/promises')).lookup(host);
    const fd = this.native.listen(family === 6 ? 6 : 4, address, port, 511);
    if (fd < 0) throw systemError('listen', fd, `${host}:${port}`);
    this.listenFd = fd;
    this.listenWatch = this.native.watch(
      fd,
      this.opts.guard('the listening socket', (status: number) =>
        // A poll error stopped the polling: retried like a failed accept.
        status < 0 ? this.acceptFailed(status) : this.onAcceptable(),
      ),
    );
  }

  prepareFork() {
    const pair = this.native.socketpair();
    if (typeof pair === 'number') throw systemError('socketpair', pair, 'for a worker');
    const [mine, theirs] = pair;
    return {
      env: { AGENT_HANDOFF_FD: String(HANDOFF_CHANNEL_FD) },
      stdio: ['inherit', 'inherit', 'inherit', 'ipc', theirs],
      forked: (worker?: Worker) => {
        // The child has its own copy (or there is no child): the primary's goes.
        this.native.close(theirs);
        if (!worker) {
          this.native.close(mine);
          return;
        }
        this.channels.set(worker.id, { workerId: worker.id, fd: mine, unacked: 0, open: 0 });
      },
    };
  }

  onMessage(): boolean {
    return false;
  }

  send(worker: Worker, id: number, fd: number, failed: (why: SendFailure) => void): void {
    let out = this.outbox.get(worker);
    if (!out) this.outbox.set(worker, (out = { ids: [], fds: [], failed: [] }));
    out.ids.push(id);
    out.fds.push(fd);
    out.failed.push(failed);
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(this.opts.guard('a handoff', () => this.flush()));
  }

  release(fd: number): void {
    this.native.close(fd);
  }

  isClosed(): boolean {
    return false;
  }

  gone(workerId: number): void {
    const ch = this.channels.get(workerId);
    if (!ch) return;
    this.channels.delete(workerId);
    // What it said before it died is still there to read: a connection it acknowledged was
    // served (maybe half read) and must not go to another worker.
    this.read(ch, false);
    this.native.close(ch.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // The channels are still read: the workers' last acknowledgements and refusals release or
    // redispatch what they were handed (the dispatcher closes what has nowhere to go).
    clearTimeout(this.retryTimer);
    if (this.listenWatch) this.native.unwatch(this.listenWatch);
    if (this.listenFd >= 0) this.native.close(this.listenFd);
    this.listenFd = -1;
  }

  private onAcceptable(): void {
    if (this.closed) return;
    // Acknowledgements first: the choice of worker counts what they report. Everything, count
    // reports included, when the last full read is COUNT_FRESH_MS old.
    const now = performance.now();
    const all = now - this.readAllAt >= COUNT_FRESH_MS;
    if (all) this.readAllAt = now;
    for (const ch of this.channels.values()) if (all || ch.unacked > 0) this.read(ch, !all);
    const got = this.native.accept(this.listenFd, HANDOFF_BATCH);
    if (typeof got === 'number') {
      this.acceptFailed(got);
      return;
    }
    this.retryMs = 0;
    for (const fd of got) this.events?.connection(fd);
  }

  /**
   * EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in the kernel's backlog and the
   * socket stays readable, so polling on would spin. Stop, retry later, backed off.
   */
  private acceptFailed(errno: number): void {
    this.retryMs = Math.min(ACCEPT_RETRY_MAX_MS, this.retryMs ? this.retryMs * 2 : ACCEPT_RETRY_MS);
    if (this.retryMs === ACCEPT_RETRY_MS || this.retryMs === ACCEPT_RETRY_MAX_MS)
      this.opts.log.warn('cannot accept new connections; retrying', {
        error: getSystemErrorName(errno),
        retry_ms: this.retryMs,
      });
    const watch = this.listenWatch!;
    this.native.pause(watch);
    this.retryTimer = setTimeout(
      this.opts.guard('the listening socket', () => {
        if (!this.closed) this.native.resume(watch);
      }),
      this.retryMs,
    );
    this.retryTimer.unref();
  }

  /** Sends what this tick handed over, a message per worker (per HANDOFF_BATCH connections). */
  private flush(): void {
    this.flushQueued = false;
    // A failure's redispatch may add to another worker's outbox: it is sent in this loop.
    while (this.outbox.size > 0) {
      const [worker, out] = this.outbox.entries().next().value as [Worker, Outgoing];
      this.outbox.delete(worker);
      const ch = this.channels.get(worker.id);
      for (let i = 0; i < out.fds.length; i += HANDOFF_BATCH) {
        const fds = out.fds.slice(i, i + HANDOFF_BATCH);
        const r = ch
          ? this.native.send(ch.fd, Int32Array.from(out.ids.slice(i, i + HANDOFF_BATCH)), fds)
          : -1;
        if (r >= 0) {
          ch!.unacked += fds.length;
          continue;
        }
        // EPIPE, ECONNRESET...: the channel is gone with the worker. EAGAIN (it has not read its
        // channel for a while: stopped, or its loop blocked), ENOBUFS and the like: for now.
        const why: SendFailure = !ch || CHANNEL_GONE.has(-r) ? 'gone' : 'full';
        for (const failed of out.failed.slice(i)) failed(why);
        break;
      }
    }
    this.scheduleRead();
  }

  /**
   * Reads a worker's messages: until none waits or, with `untilAcked`, until nothing it was sent
   * is unacknowledged (a count report can wait for the timer; one recvmsg fewer per wake-up).
   */
  private read(ch: Channel, untilAcked: boolean): void {
    while (!untilAcked || ch.unacked > 0) {
      const msg = this.native.recv(ch.fd);
      if (msg === null) return;
      if (typeof msg === 'number') {
        // 0: the worker's end closed (its exit is handled by the pool). Another error (ENOMEM...)
        // may pass: read again later.
        if (msg === 0 || CHANNEL_GONE.has(-msg)) this.gone(ch.workerId);
        return;
      }
      const [words, fds] = msg;
      // A worker never sends descriptors: never leak one that arrives anyway.
      for (const stray of fds) this.native.close(stray);
      for (let i = 0; i + 2 < words.length; i += 3) {
        const kind = words[i]!;
        const id = words[i + 1]!;
        const open = words[i + 2]!;
        ch.open = open;
        if (kind === HANDOFF_COUNT) {
          this.events?.count(ch.workerId, open);
          continue;
        }
        ch.unacked = Math.max(0, ch.unacked - 1);
        this.events?.ack(ch.workerId, id, ANSWERS[kind] ?? 'refused', open);
      }
    }
  }

  /**
   * The timer that reads the channels when no connection arrives to do it; none while no worker
   * has a connection (nothing can be reported then).
   */
  private scheduleRead(): void {
    let ms = 0;
    for (const ch of this.channels.values()) {
      if (ch.unacked > 0) ms = ACK_READ_MS;
      else if (ch.open > 0 && ms === 0) ms = COUNT_READ_MS;
    }
    if (ms === 0) return;
    if (this.readTimer && this.readTimerMs <= ms) return;
    clearTimeout(this.readTimer);
    this.readTimerMs = ms;
    this.readTimer = setTimeout(
      this.opts.guard('the worker channels', () => {
        this.readTimer = undefined;
        this.readAllAt = performance.now();
        // An acknowledgement's redispatch (a refusal) may call gone(): iterate a copy.
        for (const ch of [...this.channels.values()]) this.read(ch, false);
        this.scheduleRead();
      }),
      ms,
    );
    this.readTimer.unref();
  }
}
