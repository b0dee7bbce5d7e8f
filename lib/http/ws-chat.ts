// The chat protocol over the WebSocket endpoint /agent/v1/ws (README "WebSocket chat protocol").
// The app id comes from the upgrade request (header x-consumer-username, or ?app_id= for
// browsers, which cannot set headers). Client messages:
//   {"type":"chat","request_id":"r1","body":{...the POST /chat/completions body...}}
//   {"type":"cancel","request_id":"r1"}
// Server frames: {"request_id":"r1","chunk":{...the SSE chunk objects...}} for every chunk, then
// {"request_id":"r1","done":true} (plus "cancelled":true after a cancel). A body that fails
// validation answers one chunk frame with the 40002 body, then done. Several requests may run at
// once on one socket (at most SERVICE_WS_MAX_CONCURRENT_CHATS; one more is a 40002 error frame);
// a closed socket aborts them all (and their upstream requests), and so does a client that stops
// reading for SERVICE_WRITE_STALL_TIMEOUT (the socket is terminated).
import type { IncomingMessage } from 'node:http';
import type { Context } from '@opentelemetry/api';
import type { WebSocket } from 'ws';
import { validationBody, type ChatChunk } from '../agent/chunks.js';
import { APP_ID_HEADER, validateCompletion } from '../agent/request.js';
import type { ChatService } from '../agent/service.js';
import { RequestValidationError } from '../schema/schema.js';
import { sidsFor, type AppDeps } from './deps.js';
import { requestIdOf } from '../telemetry/context.js';
import { callerContext } from '../telemetry/tracing.js';
import { touching, wsKeepAlive } from './keepalive.js';
import { sendFrame, sendWithBackpressure, stallPolicy } from './stream.js';

export interface WsChatSession {
  /** From the upgrade request; undefined = missing (each chat then answers 40002). */
  appId: string | undefined;
  /** The caller's trace context from the upgrade request (tracing on): each chat's parent. */
  trace?: Context;
  /** The upgrade's request id (`X-Request-Id` on the 101): every chat's outgoing calls and logs. */
  requestId?: string;
  running: Map<string, AbortController>;
  /** Set by a drain: refuse new chats, close with this code when the last one ends. */
  closeCode?: number;
}

export interface WsChat {
  open(req: IncomingMessage): WsChatSession;
  /** Handles a `chat` or `cancel` message. */
  handle(ws: WebSocket, session: WsChatSession, msg: Record<string, unknown>): void;
  /** The socket closed: abort everything still running. */
  close(session: WsChatSession): void;
  /** Drain: close now when idle, else after the running chats end. */
  closeWhenIdle(ws: WebSocket, session: WsChatSession, code: number, reason: string): void;
}

function appIdOf(req: IncomingMessage): string | undefined {
  const h = req.headers[APP_ID_HEADER];
  if (typeof h === 'string') return h;
  if (Array.isArray(h)) return h[h.length - 1];
  const q = (req.url ?? '').indexOf('?');
  if (q < 0) return undefined;
  return new URLSearchParams((req.url ?? '').slice(q + 1)).get('app_id') ?? undefined;
}

export function createWsChat(deps: AppDeps & { chat: ChatService }): WsChat {
  const chat = deps.chat;
  const sids = sidsFor(deps);
  const reasons = new Map<number, string>();

  const stall = (sid?: string, requestId?: string) =>
    stallPolicy(deps, sid, requestId, 'websocket client');
  const maxChats = deps.settings.SERVICE_WS_MAX_CONCURRENT_CHATS;

  const protocolError = (ws: WebSocket, requestId: unknown, code: number, message: string) =>
    sendFrame(ws, { type: 'error', request_id: requestId ?? null, code, message }, stall());

  const maybeClose = (ws: WebSocket, s: WsChatSession) => {
    if (s.closeCode !== undefined && s.running.size === 0 && ws.readyState === ws.OPEN) {
      ws.close(s.closeCode, reasons.get(s.closeCode) ?? '');
    }
  };

  function startChat(ws: WebSocket, s: WsChatSession, msg: Record<string, unknown>): void {
    const rid = msg.request_id;
    if (rid === undefined || rid === null)
      return protocolError(ws, rid, 40002, 'missing, request_id, Field required');
    if (typeof rid !== 'string' || rid === '') {
      return protocolError(
        ws,
        rid,
        40002,
        'string_type, request_id, Input should be a non-empty string',
      );
    }
    if (s.running.has(rid)) {
      return protocolError(
        ws,
        rid,
        40002,
        'value_error, request_id, a request with this request_id is still running',
      );
    }
    if (s.running.size >= maxChats) {
      // A bound per socket: one connection cannot hold more runs (and upstream requests) open.
      return protocolError(
        ws,
        rid,
        40002,
        `value_error, request_id, at most ${maxChats} chats may run at once on one connection`,
      );
    }
    if (s.closeCode !== undefined) {
      return protocolError(
        ws,
        rid,
        40500,
        'Agent internal service error,this worker is shutting down: reconnect',
      );
    }
    const sid = sids.next();
    const policy = stall(sid, s.requestId);
    let parsed: ReturnType<typeof validateCompletion>;
    try {
      parsed = validateCompletion(
        { parsed: msg.body },
        s.appId === undefined ? [] : [[APP_ID_HEADER, s.appId]],
      );
    } catch (err) {
      if (!(err instanceof RequestValidationError)) throw err;
      sendFrame(ws, { request_id: rid, chunk: validationBody(err, sid) }, policy);
      sendFrame(ws, { request_id: rid, done: true }, policy);
      return;
    }
    const controller = new AbortController();
    s.running.set(rid, controller);
    const idle = wsKeepAlive(ws, deps.settings.SERVICE_SSE_KEEPALIVE_INTERVAL);
    const emit = touching(idle, (c: ChatChunk) =>
      sendWithBackpressure(ws, { request_id: rid, chunk: c }, policy),
    );
    void chat
      .completions(
        {
          sid,
          appId: parsed.appId,
          inputs: parsed.inputs,
          trace: s.trace,
          requestId: s.requestId,
        },
        controller.signal,
        emit,
      )
      .then(
        (outcome) =>
          sendFrame(
            ws,
            { request_id: rid, done: true, ...(outcome.aborted ? { cancelled: true } : {}) },
            policy,
          ),
        (err: unknown) =>
          deps.logger.error('websocket chat failed', { sid, request_id: s.requestId, err }),
      )
      .finally(() => {
        idle?.stop();
        s.running.delete(rid);
        maybeClose(ws, s);
      });
  }

  return {
    open: (req) => ({
      appId: appIdOf(req),
      running: new Map(),
      trace: callerContext(req),
      requestId: requestIdOf(req),
    }),
    handle(ws, s, msg) {
      if (msg.type === 'chat') {
        startChat(ws, s, msg);
        return;
      }
      const rid = msg.request_id;
      const controller = typeof rid === 'string' ? s.running.get(rid) : undefined;
      if (!controller) {
        protocolError(
          ws,
          rid,
          40002,
          'value_error, request_id, no running request with this request_id',
        );
        return;
      }
      controller.abort();
    },
    close(s) {
      for (const c of s.running.values()) c.abort();
    },
    closeWhenIdle(ws, s, code, reason) {
      reasons.set(code, reason);
      s.closeCode = code;
      maybeClose(ws, s);
    },
  };
}
