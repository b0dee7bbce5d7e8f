// SERVICE_SCHEDULING=leastconn, the worker's side: it never listens; the primary hands it
// accepted connections over IPC (see lib/supervisor/dispatch.ts). Each is acknowledged at once,
// so that the primary can close its copy (or, when this worker drains, hand it to another), and
// the worker's count of open connections travels back for the primary's least-connections choice.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { isConnMessage, type HandoffMessage } from '../ipc.js';

/** How stale the primary's count of this worker's connections may get after closes. */
const CLOSE_REPORT_MS = 20;

export function acceptFromPrimary(
  server: Server,
  opts: { draining: () => boolean; send: (msg: HandoffMessage) => void },
): void {
  // Node checks the request and headers timeouts (slow clients) with a timer that http.Server
  // starts on 'listening': a server that never listens must start it too.
  server.emit('listening');
  let open = 0;
  let report: NodeJS.Timeout | undefined;
  let reportedAt = -Infinity;
  // Closes are reported at most every CLOSE_REPORT_MS, not once each: with one connection per
  // request that would double the primary's IPC per connection, and each ack carries the count.
  // The first close after a quiet spell is reported at once, the rest of a burst at the end of
  // the interval: a mass close moves the counts at once, not 20 ms later.
  const sendReport = () => {
    report = undefined;
    reportedAt = performance.now();
    opts.send({ t: 'conns', open });
  };
  const closed = () => {
    open--;
    if (report) return;
    const wait = reportedAt + CLOSE_REPORT_MS - performance.now();
    if (wait <= 0) sendReport();
    else report = setTimeout(sendReport, wait).unref();
  };
  process.on('message', (m: unknown, handle: unknown) => {
    if (!isConnMessage(m)) return;
    const socket = handle as Socket | undefined;
    if (!socket) {
      // The descriptor did not arrive (the primary's copy was gone): nothing to serve, say so.
      opts.send({ t: 'conn-ack', id: m.id, ok: false, open });
      return;
    }
    if (opts.draining()) {
      // Closes this process's copy of the descriptor only; nothing was read from it.
      socket.destroy();
      opts.send({ t: 'conn-ack', id: m.id, ok: false, open });
      return;
    }
    // What net.Server does for the sockets it accepts (http.Server's noDelay default): without it
    // Nagle's algorithm holds small writes (an SSE chunk) for the peer's delayed ACK, ~40 ms.
    socket.setNoDelay(true);
    open++;
    socket.once('close', closed);
    server.emit('connection', socket);
    opts.send({ t: 'conn-ack', id: m.id, ok: true, open });
  });
}
