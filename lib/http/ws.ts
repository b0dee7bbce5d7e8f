// WebSocket endpoint /agent/v1/ws: JSON messages, ping/pong heartbeat, proper close codes; the
// chat protocol (`chat` / `cancel` messages) is delegated to ws-chat.ts.
import type { IncomingMessage } from 'node:http';
import type { RawData, WebSocket, WebSocketServer } from 'ws';
import { exceedsJsonDepth } from '../schema/json.js';
import { requestIdFrom, requestIdOf, setRequestId } from '../telemetry/context.js';
import type { AppDeps } from './deps.js';
import { sendFrame, stallPolicy, type StallPolicy } from './stream.js';
import { createWsChat, type WsChat, type WsChatSession } from './ws-chat.js';

export const WS_PATH = '/agent/v1/ws';

interface Tracked extends WebSocket {
  pongAt?: number;
  pingTimer?: NodeJS.Timeout;
  chat?: WsChatSession;
}

const chats = new WeakMap<WebSocketServer, WsChat>();

/**
 * Drain: closes every client with `code`; a client with chats still running is closed when its
 * last one ends (new chats are refused meanwhile), so a stream finishes within the deadline.
 */
export function closeWebSockets(wss: WebSocketServer, code: number, reason: string): void {
  const chat = chats.get(wss);
  for (const ws of wss.clients as Set<Tracked>) {
    if (chat && ws.chat) chat.closeWhenIdle(ws, ws.chat, code, reason);
    else ws.close(code, reason);
  }
}

/** The ws package is imported here, on the first upgrade: a worker without WebSockets never loads it. */
export async function createWsServer(deps: AppDeps): Promise<WebSocketServer> {
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: deps.settings.SERVICE_MAX_BODY_SIZE,
    clientTracking: true,
  });
  const chat = deps.chat ? createWsChat({ ...deps, chat: deps.chat }) : undefined;
  if (chat) chats.set(wss, chat);
  // One request id per WebSocket (its upgrade's): echoed on the 101, on the log lines and outgoing
  // calls of its chats.
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    const id = requestIdFrom(req.headers['x-request-id']);
    setRequestId(req, id);
    headers.push(`X-Request-Id: ${id}`);
  });
  wss.on('connection', (ws: Tracked, req: IncomingMessage) => {
    const requestId = requestIdOf(req);
    const stall = stallPolicy(deps, undefined, requestId, 'websocket client');
    if (chat) ws.chat = chat.open(req);
    ws.on('message', (data: RawData, isBinary: boolean) =>
      onMessage(ws, data, isBinary, stall, chat),
    );
    ws.on('pong', () => {
      ws.pongAt = Date.now();
      if (ws.pingTimer) clearTimeout(ws.pingTimer);
      ws.pingTimer = undefined;
    });
    ws.on('error', (err) =>
      deps.logger.debug('websocket error', { request_id: requestId, err: err.message }),
    );
    ws.on('close', () => {
      if (ws.pingTimer) clearTimeout(ws.pingTimer);
      if (chat && ws.chat) chat.close(ws.chat);
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

function onMessage(
  ws: Tracked,
  data: RawData,
  isBinary: boolean,
  stall: StallPolicy,
  chat?: WsChat,
): void {
  const send = (msg: unknown) => sendFrame(ws, msg, stall);
  if (isBinary) {
    ws.close(1003, 'binary frames are not supported; send JSON text');
    return;
  }
  let msg: unknown;
  try {
    const text = data.toString();
    // A message nested past the limit is malformed JSON here too (see MAX_JSON_DEPTH).
    if (exceedsJsonDepth(text)) throw new SyntaxError('nested too deep');
    msg = JSON.parse(text);
  } catch {
    send({ type: 'error', code: 40002, message: 'json_invalid, message, JSON decode error' });
    return;
  }
  const type =
    typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
  if (type === 'ping') {
    send({ type: 'pong' });
    return;
  }
  if (chat && ws.chat && (type === 'chat' || type === 'cancel')) {
    chat.handle(ws, ws.chat, msg as Record<string, unknown>);
    return;
  }
  send({ type: 'error', code: 40002, message: `literal_error, type, unknown message type` });
}
