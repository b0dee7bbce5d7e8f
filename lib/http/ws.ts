// WebSocket endpoint /agent/v1/ws: JSON messages, ping/pong heartbeat, proper close codes.
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { AppDeps } from './deps.js';

export const WS_PATH = '/agent/v1/ws';

interface Tracked extends WebSocket {
  pongAt?: number;
  pingTimer?: NodeJS.Timeout;
}

export function createWsServer(deps: AppDeps): WebSocketServer {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: deps.settings.SERVICE_MAX_BODY_SIZE,
    clientTracking: true,
  });
  wss.on('connection', (ws: Tracked, _req: IncomingMessage) => {
    ws.on('message', (data: RawData, isBinary: boolean) => onMessage(ws, data, isBinary));
    ws.on('pong', () => {
      ws.pongAt = Date.now();
      if (ws.pingTimer) clearTimeout(ws.pingTimer);
      ws.pingTimer = undefined;
    });
    ws.on('error', (err) => deps.logger.debug('websocket error', { err: err.message }));
    ws.on('close', () => {
      if (ws.pingTimer) clearTimeout(ws.pingTimer);
    });
  });

  const interval = deps.settings.SERVICE_WS_PING_INTERVAL;
  if (interval > 0) {
    const timeout = deps.settings.SERVICE_WS_PING_TIMEOUT || interval;
    const timer = setInterval(() => {
      for (const client of wss.clients as Set<Tracked>) {
        if (client.readyState !== client.OPEN || client.pingTimer) continue;
        client.pingTimer = setTimeout(() => {
          deps.logger.debug('websocket pong timeout, terminating');
          client.terminate();
        }, timeout);
        client.ping();
      }
    }, interval);
    timer.unref();
    wss.on('close', () => clearInterval(timer));
  }
  return wss;
}

function send(ws: WebSocket, msg: unknown): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}

function onMessage(ws: WebSocket, data: RawData, isBinary: boolean): void {
  if (isBinary) {
    ws.close(1003, 'binary frames are not supported; send JSON text');
    return;
  }
  let msg: unknown;
  try {
    msg = JSON.parse(data.toString());
  } catch {
    send(ws, { type: 'error', code: 40002, message: 'json_invalid, message, JSON decode error' });
    return;
  }
  const type = typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
  if (type === 'ping') {
    send(ws, { type: 'pong' });
    return;
  }
  send(ws, { type: 'error', code: 40002, message: `literal_error, type, unknown message type` });
}
