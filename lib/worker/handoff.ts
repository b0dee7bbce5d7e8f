// SERVICE_SCHEDULING=leastconn, the worker's side: it never listens; the primary hands it
// accepted connections (see lib/supervisor/dispatch.ts), in batches over the native channel
// (AGENT_HANDOFF_FD, native/handoff.c) or one by one over IPC. Each is acknowledged at once, so
// that the primary can close its copy (or, when this worker drains, hand it to another), and the
// worker's count of open connections travels back for the primary's least-connections choice.
import type { Server } from 'node:http';
import net, { type Socket } from 'node:net';
import { isConnMessage, type HandoffMessage } from '../ipc.js';
import {
  HANDOFF_COUNT,
  HANDOFF_OK,
  HANDOFF_REFUSED,
  HANDOFF_RETRY,
  CHANNEL_GONE,
  nativeHandoff,
  type NativeHandoff,
} from '../native-handoff.js';

/** How stale the primary's count of this worker's connections may get after closes. */
const CLOSE_REPORT_MS = 20;
/** Words of one message to the primary (records of 3; the native side takes up to 1024). */
const REPLY_WORDS = 960;
/** Retries of a message the primary's full channel refused, backed off to 1 s. */
const REPLY_RETRY_MS = 10;
const REPLY_RETRY_MAX_MS = 1000;

export interface HandoffOptions {
  draining: () => boolean;
  send: (msg: HandoffMessage) => void;
  log: (message: string, fields: Record<string, unknown>) => void;
}

export function acceptFromPrimary(server: Server, opts: HandoffOptions): void {
  // Node checks the request and headers timeouts (slow clients) with a timer that http.Server
  // starts on 'listening': a server that never listens must start it too.
  server.emit('listening');
  const channel = Number(process.env.AGENT_HANDOFF_FD ?? NaN);
  if (Number.isInteger(channel) && channel >= 0) {
    const { native, why } = nativeHandoff();
    // The primary loaded it from the same folder: this cannot happen short of a broken install.
    if (!native) throw new Error(`the primary uses the native handoff, but here it ${why}`);
    acceptNative(server, native, channel, opts);
  } else {
    acceptIpc(server, opts);
  }
}

/** Counts open connections; reports closes at most every CLOSE_REPORT_MS. */
function openCounter(report: (open: number) => void) {
  const c = { open: 0, closed };
  let timer: NodeJS.Timeout | undefined;
  let reportedAt = -Infinity;
  // Closes are reported at most every CLOSE_REPORT_MS, not once each: with one connection per
  // request that would double the primary's work per connection, and each ack carries the count.
  // The first close after a quiet spell is reported at once, the rest of a burst at the end of
  // the interval: a mass close moves the counts at once, not 20 ms later.
  const sendReport = () => {
    timer = undefined;
    reportedAt = performance.now();
    report(c.open);
  };
  function closed() {
    c.open--;
    if (timer) return;
    const wait = reportedAt + CLOSE_REPORT_MS - performance.now();
    if (wait <= 0) sendReport();
    else timer = setTimeout(sendReport, wait).unref();
  }
  return c;
}

/** What net.Server does for the sockets it accepts, before http.Server sees one. */
function serve(server: Server, socket: Socket, conns: ReturnType<typeof openCounter>): void {
  // http.Server's noDelay default: without it Nagle's algorithm holds small writes (an SSE
  // chunk) for the peer's delayed ACK, ~40 ms.
  socket.setNoDelay(true);
  // And its allowHalfOpen: http.Server ends the connection itself after answering a client that
  // half-closed; a socket that ends itself at the client's FIN would drop that answer.
  socket.allowHalfOpen = true;
  conns.open++;
  socket.once('close', conns.closed);
  server.emit('connection', socket);
}

function acceptIpc(server: Server, opts: HandoffOptions): void {
  const conns = openCounter((open) => opts.send({ t: 'conns', open }));
  process.on('message', (m: unknown, handle: unknown) => {
    if (!isConnMessage(m)) return;
    const socket = handle as Socket | undefined;
    if (!socket) {
      // The descriptor did not arrive (this process out of descriptors): another worker for it.
      opts.send({ t: 'conn-ack', id: m.id, ok: false, retry: true, open: conns.open });
      return;
    }
    if (opts.draining()) {
      // Closes this process's copy of the descriptor only; nothing was read from it.
      socket.destroy();
      opts.send({ t: 'conn-ack', id: m.id, ok: false, open: conns.open });
      return;
    }
    serve(server, socket, conns);
    opts.send({ t: 'conn-ack', id: m.id, ok: true, open: conns.open });
  });
}

function acceptNative(
  server: Server,
  native: NativeHandoff,
  channel: number,
  opts: HandoffOptions,
): void {
  // A stdio descriptor is inherited by the processes this worker spawns: the channel must not be
  // (a child holding it would keep the connections queued for a dead worker open).
  native.cloexec(channel);
  // Records not sent yet: the channel is full while the primary does not read it (stopped).
  // Never dropped for that: an acknowledgement lost would leave the connection the primary's,
  // to be handed to another worker if this one died later. Retried, backed off.
  let queued: number[] = [];
  let retry: NodeJS.Timeout | undefined;
  let retryMs = 0;
  const flush = () => {
    retry = undefined;
    while (queued.length > 0) {
      const words = queued.slice(0, REPLY_WORDS);
      const r = native.send(channel, Int32Array.from(words), []);
      if (r >= 0) {
        queued.splice(0, words.length);
        retryMs = 0;
        continue;
      }
      if (CHANNEL_GONE.has(-r)) {
        // The primary is gone: this worker exits with it (its IPC channel says so).
        queued = [];
        return;
      }
      // EAGAIN (full), ENOBUFS, ENOMEM...: later.
      retryMs = Math.min(REPLY_RETRY_MAX_MS, retryMs ? retryMs * 2 : REPLY_RETRY_MS);
      if (retryMs === REPLY_RETRY_MAX_MS)
        opts.log('the primary does not take acknowledgements; retrying', { errno: r });
      retry = setTimeout(flush, retryMs).unref();
      return;
    }
  };
  const reply = (words: number[]) => {
    for (const w of words) queued.push(w);
    if (!retry) flush();
  };
  const conns = openCounter((open) => reply([HANDOFF_COUNT, 0, open]));
  /** One handed-over connection: served, or why not (the record kind). */
  const take = (fd: number): number => {
    // This process's copy only; nothing was read from it.
    if (opts.draining()) {
      native.close(fd);
      return HANDOFF_REFUSED;
    }
    let socket: Socket;
    try {
      socket = new net.Socket({ fd, readable: true, writable: true });
    } catch (err) {
      native.close(fd);
      opts.log('a handed-over connection could not be opened', { err });
      return HANDOFF_RETRY;
    }
    try {
      serve(server, socket, conns);
    } catch (err) {
      // A bug in a 'connection' listener: the connection is this worker's now; it ends here.
      opts.log('a handed-over connection failed at its start', { err });
      socket.destroy();
    }
    return HANDOFF_OK;
  };
  const watch = native.watch(channel, (status: number) => {
    if (status < 0) {
      // The channel broke (the primary is gone): this worker exits with it.
      native.unwatch(watch);
      return;
    }
    for (;;) {
      const msg = native.recv(channel);
      if (msg === null) return;
      if (typeof msg === 'number') {
        if (msg === 0 || CHANNEL_GONE.has(-msg)) native.unwatch(watch);
        return;
      }
      const [ids, fds] = msg;
      const acks: number[] = [];
      for (let i = 0; i < fds.length; i++) acks.push(take(fds[i]!), ids[i] ?? 0, conns.open);
      // Ids without a descriptor: this process was out of descriptors and the kernel closed
      // those it could not install. The primary's copies go to another worker.
      for (let i = fds.length; i < ids.length; i++) acks.push(HANDOFF_RETRY, ids[i]!, conns.open);
      if (acks.length > 0) reply(acks);
    }
  });
}
