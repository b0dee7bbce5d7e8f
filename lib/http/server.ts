// One http.Server carrying Express and the ws server, with a drain that loses no request:
// stop listening (keeping open sockets), answer what arrives with `Connection: close`, close
// sockets that stay idle, close WebSockets with the given code, force only at the deadline.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { createApp, expressHttpClasses } from './app.js';
import type { AppDeps } from './deps.js';
import { HEALTH_PATHS, healthHandler } from './routes/health.js';
import { isMetricsRequest, metricsHandler, routeLabel } from './routes/metrics.js';
import { requestIdFrom, setRequestId } from '../telemetry/context.js';
import { CLIENT_CLOSED_STATUS } from '../telemetry/metrics.js';
import { startServerSpan } from '../telemetry/tracing.js';
import type { WebSocketServer } from 'ws';
import { closeWebSockets, createWsServer, WS_PATH } from './ws.js';

const BAD_REQUEST_BODY = JSON.stringify({ detail: 'Bad Request' });
const BAD_REQUEST =
  'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n' +
  `Content-Length: ${Buffer.byteLength(BAD_REQUEST_BODY)}\r\nConnection: close\r\n\r\n${BAD_REQUEST_BODY}`;

/** How long a socket may stay idle during a drain before it is closed. */
const IDLE_GRACE_MS = 300;

interface TrackedSocket extends Socket {
  active?: number;
}

export interface HttpService {
  server: http.Server;
  /** Requests received so far. */
  requestCount(): number;
  /** Requests being answered now (SSE streams included), and open SSE + WebSocket streams. */
  inFlight(): { requests: number; streams: number };
  /** Calls `fn` once when the request count reaches `n`. */
  onRequestCount(n: number, fn: () => void): void;
  drain(wsCloseCode: number, timeoutMs: number): Promise<boolean>;
}

export function createHttpService(deps: AppDeps): HttpService {
  const app = createApp(deps);
  const health = healthHandler(deps);
  // Created (and the ws package loaded) by the first upgrade.
  let wss: WebSocketServer | undefined;
  let wssLoading: Promise<WebSocketServer> | undefined;
  const metrics = deps.metrics;
  metrics?.limitSeries(deps.settings.METRICS_MAX_SERIES);
  const scrape =
    metrics && deps.settings.METRICS_ENABLE ? metricsHandler(deps, metrics) : undefined;
  const sockets = new Set<TrackedSocket>();
  const inflight = new Set<ServerResponse>();
  let requests = 0;
  let countWatch: { n: number; fn: () => void } | undefined;

  const server = http.createServer(expressHttpClasses(app), (req, res) => {
    const requestId = requestIdFrom(req.headers['x-request-id']);
    res.setHeader('X-Request-Id', requestId);
    setRequestId(req, requestId);
    requests++;
    if (countWatch && requests >= countWatch.n) {
      const { fn } = countWatch;
      countWatch = undefined;
      fn();
    }
    const socket = req.socket as TrackedSocket;
    socket.active = (socket.active ?? 0) + 1;
    inflight.add(res);
    const startedAt = metrics ? performance.now() : 0;
    const span = startServerSpan(req); // undefined unless tracing is on
    let route: string | undefined; // set by the fast paths; Express routes: the matched pattern
    res.once('close', () => {
      socket.active = (socket.active ?? 1) - 1;
      inflight.delete(res);
      if (metrics || span) {
        const status = res.writableFinished ? res.statusCode : CLIENT_CLOSED_STATUS;
        const r = route ?? routeLabel(req);
        metrics?.observeRequest(req.method ?? 'GET', r, status, startedAt);
        span?.end(r, status);
      }
    });
    if (deps.lifecycle.draining) res.setHeader('Connection', 'close');
    // Answered before Express's router: the cheapest path for load balancers and probes.
    if (HEALTH_PATHS.has(req.url ?? '') && (req.method === 'GET' || req.method === 'HEAD')) {
      route = req.url;
      health(req, res);
      return;
    }
    if (scrape && isMetricsRequest(req)) {
      route = '/metrics';
      scrape(req, res);
      return;
    }
    app(req, res);
  });

  server.on('connection', (socket: TrackedSocket) => {
    socket.active = 0;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== WS_PATH || deps.lifecycle.draining) {
      const status = path !== WS_PATH ? '404 Not Found' : '503 Service Unavailable';
      const body = JSON.stringify({
        detail: path !== WS_PATH ? 'Not Found' : 'Service Unavailable',
      });
      socket.end(
        `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    // The socket now belongs to the WebSocket: never closed as idle by a drain.
    (socket as TrackedSocket).active = 1;
    const upgrade = (w: WebSocketServer) =>
      w.handleUpgrade(req, socket, head, (ws) => {
        if (metrics) {
          metrics.wsOpened();
          ws.once('close', () => metrics.wsClosed());
        }
        w.emit('connection', ws, req);
      });
    if (wss) return upgrade(wss);
    // The first upgrade loads ws; until ws listens, a reset of this socket must not go unheard.
    const onError = () => socket.destroy();
    socket.on('error', onError);
    wssLoading ??= createWsServer(deps).then((w) => (wss = w));
    wssLoading.then(
      (w) => {
        socket.off('error', onError);
        // Gone meanwhile, or a drain began: not taken.
        if (socket.destroyed || deps.lifecycle.draining) return void socket.destroy();
        upgrade(w);
      },
      (err: unknown) => {
        deps.logger.error('websocket server not started', { err });
        socket.destroy();
      },
    );
  });

  // A request Node's parser cannot read (bad syntax, a body cut short by the client): a JSON
  // error like every other answer, then the connection closed.
  server.on('clientError', (_err, socket: Duplex) => {
    if (socket.writable) socket.end(BAD_REQUEST);
    else socket.destroy();
  });

  async function drain(wsCloseCode: number, timeoutMs: number): Promise<boolean> {
    deps.lifecycle.draining = true;
    // net.Server's close stops accepting but, unlike http.Server's in Node 20, keeps idle
    // keep-alive sockets open, so a request racing the close is still answered.
    net.Server.prototype.close.call(server);
    for (const res of inflight) if (!res.headersSent) res.setHeader('Connection', 'close');
    // A WebSocket with chats still streaming is closed when they end (or at the deadline).
    if (wss)
      closeWebSockets(wss, wsCloseCode, wsCloseCode === 1012 ? 'service restart' : 'going away');

    const deadline = Date.now() + timeoutMs;
    const idleSince = new Map<TrackedSocket, number>();
    return await new Promise<boolean>((resolve) => {
      const tick = (): void => {
        const now = Date.now();
        for (const s of sockets) {
          if ((s.active ?? 0) > 0) {
            idleSince.delete(s);
            continue;
          }
          const since = idleSince.get(s) ?? now;
          idleSince.set(s, since);
          if (now - since >= IDLE_GRACE_MS) s.destroy();
        }
        if (sockets.size === 0 && (wss?.clients.size ?? 0) === 0) {
          clearInterval(timer);
          resolve(true);
        } else if (now >= deadline) {
          clearInterval(timer);
          for (const ws of wss?.clients ?? []) ws.terminate();
          for (const s of sockets) s.destroy();
          resolve(false);
        }
      };
      const timer = setInterval(tick, 50);
      tick();
    });
  }

  return {
    server,
    requestCount: () => requests,
    inFlight: () => {
      let sse = 0;
      for (const res of inflight)
        if (String(res.getHeader('content-type') ?? '').startsWith('text/event-stream')) sse++;
      return { requests: inflight.size, streams: sse + (wss?.clients.size ?? 0) };
    },
    onRequestCount: (n, fn) => {
      countWatch = { n, fn };
    },
    drain,
  };
}
