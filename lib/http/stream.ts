// What the three chat transports (POST /chat/completions, POST /custom/chat/completions and the
// WebSocket chat) share to answer a run: reading and validating the request with the shared
// answer when it cannot be read, writing with back-pressure (SSE frames or WebSocket messages),
// and aborting the run when the client goes away.
import type { Request, Response } from 'express';
import type { WebSocket } from 'ws';
import { chunkFrame, SSE_DONE, type ChatChunk } from '../agent/chunks.js';
import type { ChatOutcome, Emit } from '../agent/service.js';
import { answerUnreadable, decodeBody, headerEntries } from './body.js';
import type { AppDeps } from './deps.js';
import { sseKeepAlive, touching } from './keepalive.js';

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  'X-Accel-Buffering': 'no',
} as const;

/**
 * Reads the body and runs a request validator on it and the headers; when the request cannot be
 * read answers it (the 40002 body with HTTP 200, or a 4xx JSON error) and returns undefined.
 */
export function validateOrAnswer<T>(
  req: Request,
  res: Response,
  sid: string,
  validate: (body: { parsed: unknown }, headers: [string, string][]) => T,
): T | undefined {
  try {
    const parsed = decodeBody(req.body as Buffer | undefined, req.headers['content-type']);
    return validate({ parsed }, headerEntries(req.headers));
  } catch (err) {
    if (answerUnreadable(res, err, sid)) return undefined;
    throw err;
  }
}

/** An AbortController aborted when the client goes away before the answer is finished. */
export function abortOnClose(res: Response): AbortController {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller;
}

/** What a chat transport does with a client that stops reading. */
export interface StallPolicy {
  /** SERVICE_WRITE_STALL_TIMEOUT: how long the buffered answer may make no progress. */
  stallMs: number;
  /** Called once when the client is cut (for the log). */
  onStall?: () => void;
}

/**
 * The worker's stall policy for one request, chat or WebSocket: SERVICE_WRITE_STALL_TIMEOUT, one
 * log line on a cut naming what was cut (`client`), the run's sid and the request id when known.
 */
export function stallPolicy(
  deps: Pick<AppDeps, 'settings' | 'logger'>,
  sid: string | undefined,
  requestId: string | undefined,
  client = 'chat client',
): StallPolicy {
  const stallMs = deps.settings.SERVICE_WRITE_STALL_TIMEOUT;
  return {
    stallMs,
    onStall: () =>
      deps.logger.warn(`${client} stopped reading: connection cut`, {
        sid,
        request_id: requestId,
        stall_ms: stallMs,
      }),
  };
}

/**
 * Writes and, when the socket's buffer is full, waits for it to drain (or close). A client
 * whose connection accepts none of the buffered bytes for `stallMs` is cut: the response is
 * destroyed, so the run is aborted as if it had gone away (abortOnClose), and the request is
 * recorded as closed by the client.
 */
export function writeWithBackpressure(
  res: Response,
  text: string,
  stall: StallPolicy,
): void | Promise<void> {
  if (res.destroyed || res.writableEnded) return;
  if (res.write(text)) return;
  return drained(res, stall);
}

/** Resolves when the response's buffer drains or it closes; cuts a client that reads nothing. */
function drained(res: Response, stall: StallPolicy): Promise<void> {
  return new Promise<void>((resolve) => {
    const socket = res.socket;
    let pending = socket?.writableLength ?? 0;
    const timer = setTimeout(function check() {
      const now = socket?.writableLength ?? 0;
      if (now < pending && !res.destroyed) {
        // Slow, but reading: a fresh window from this progress on.
        pending = now;
        timer.refresh();
        return;
      }
      stall.onStall?.();
      res.destroy();
    }, stall.stallMs);
    const done = () => {
      clearTimeout(timer);
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** Frames gathered past this many characters are written at once (back-pressure applies). */
const GATHER_MAX = 16 * 1024;

/** The SSE writer of one response: `emit` for each chunk; `take` the unwritten frames at its end. */
export interface SseWriter {
  emit: (c: ChatChunk) => void | Promise<void>;
  /** The frames gathered but not yet written (they are not written by the writer any more). */
  take(): string;
}

/**
 * The SSE writer of a chat response: one frame per chunk, with back-pressure. Frames emitted in
 * the same turn of the event loop (several upstream chunks read at once) are joined and leave
 * in one write at the end of the turn (process.nextTick: no timer, a lone token is not delayed);
 * one write instead of one per frame, since each write costs a chunk header, four socket
 * writes and their share of the writev.
 */
export function sseEmitter(res: Response, stall: StallPolicy): SseWriter {
  let gathered = '';
  let queued = false;
  const take = () => {
    const text = gathered;
    gathered = '';
    return text;
  };
  const flush = () => {
    queued = false;
    const text = take();
    if (text !== '' && !res.destroyed && !res.writableEnded) res.write(text);
  };
  const emit = (c: ChatChunk): void | Promise<void> => {
    if (res.destroyed || res.writableEnded) return;
    gathered += chunkFrame(c);
    if (gathered.length >= GATHER_MAX) flush();
    else if (!queued) {
      queued = true;
      process.nextTick(flush);
    }
    // A write that filled the buffer (this one, or an earlier turn's): wait as a write would.
    if (res.writableNeedDrain) return drained(res, stall);
  };
  return { emit, take };
}

/**
 * How long the SSE headers wait for the first frame, to leave in its write: one socket write
 * instead of two per stream set-up (measured, issue 14: a stream's CPU fell by about a sixth on
 * the chat profile). A run that has nothing to say sooner gets its headers alone at this point.
 */
const HEADERS_WAIT_MS = 50;

/**
 * Streams one run as SSE (spec 4.2) with the given headers: its chunks, then `data: [DONE]`; a
 * run aborted because the client went away ends the socket without writing more. With
 * `keepAliveMs` > 0, a silence that long gets a `: keep-alive` comment (lib/http/keepalive.ts).
 */
export async function streamSse(
  res: Response,
  headers: Readonly<Record<string, string>>,
  stall: StallPolicy,
  run: (emit: Emit) => Promise<ChatOutcome>,
  keepAliveMs = 0,
): Promise<void> {
  res.writeHead(200, headers);
  // The headers leave with the first frame, in its write (one socket write, not two), or on
  // their own when no frame came within HEADERS_WAIT_MS.
  let early: NodeJS.Timeout | undefined = setTimeout(() => {
    early = undefined;
    if (!res.destroyed && !res.writableEnded) res.flushHeaders();
  }, HEADERS_WAIT_MS);
  const first =
    (emit: Emit): Emit =>
    (c) => {
      if (early) {
        clearTimeout(early);
        early = undefined;
      }
      return emit(c);
    };
  const idle = sseKeepAlive(res, keepAliveMs);
  const sse = sseEmitter(res, stall);
  const outcome = await run(first(touching(idle, sse.emit))).finally(() => {
    idle?.stop();
    if (early) clearTimeout(early);
  });
  if (outcome.aborted) {
    if (!res.destroyed) res.destroy();
    return;
  }
  // The last frames may still wait for the end of the turn: they leave with [DONE].
  res.end(sse.take() + SSE_DONE);
}

/** Past this many buffered bytes a WebSocket message waits for the socket (back-pressure). */
const WS_HIGH_WATER = 1 << 20;

/**
 * A WebSocket's output: the stall watchdog (armed while over the high-water mark), and the sends
 * waiting for the socket, released together when it closes (one listener per socket).
 */
interface WsFlow {
  watchdog?: NodeJS.Timeout;
  waiting: Set<() => void>;
}

const flows = new WeakMap<WebSocket, WsFlow>();

function flowOf(ws: WebSocket): WsFlow {
  let flow = flows.get(ws);
  if (!flow) {
    const f: WsFlow = { waiting: new Set() };
    ws.once('close', () => {
      if (f.watchdog) clearTimeout(f.watchdog);
      f.watchdog = undefined;
      for (const release of f.waiting) release();
      f.waiting.clear();
    });
    flows.set(ws, (flow = f));
  }
  return flow;
}

/**
 * Over the high-water mark: stop reading the client's messages (a client that does not read
 * cannot make us buffer more answers, pongs included) and cut it when none of its buffered
 * frames leaves for `stallMs`. Its chats are aborted when the socket closes.
 */
function watchStall(ws: WebSocket, flow: WsFlow, stall: StallPolicy): void {
  if (flow.watchdog) return;
  ws.pause();
  flow.watchdog = setTimeout(() => {
    flow.watchdog = undefined;
    if (ws.readyState !== ws.OPEN) return;
    stall.onStall?.();
    ws.terminate();
  }, stall.stallMs);
}

/** A frame left for the kernel: progress (a fresh stall window), or back under the mark. */
function flushed(ws: WebSocket, flow: WsFlow): void {
  if (!flow.watchdog) return;
  if (ws.bufferedAmount < WS_HIGH_WATER || ws.readyState !== ws.OPEN) {
    clearTimeout(flow.watchdog);
    flow.watchdog = undefined;
    if (ws.readyState === ws.OPEN) ws.resume();
  } else flow.watchdog.refresh();
}

/** Sends one JSON message on a WebSocket without waiting (see sendWithBackpressure). */
export function sendFrame(ws: WebSocket, msg: unknown, stall: StallPolicy): void {
  void sendWithBackpressure(ws, msg, stall, false);
}

/**
 * Sends one JSON message on a WebSocket; past the high-water mark, waits until it is sent (or
 * the socket closes), and a client that reads nothing for `stall.stallMs` is terminated.
 */
export function sendWithBackpressure(
  ws: WebSocket,
  msg: unknown,
  stall: StallPolicy,
  wait = true,
): void | Promise<void> {
  if (ws.readyState !== ws.OPEN) return;
  const data = JSON.stringify(msg);
  const flow = flowOf(ws);
  if (ws.bufferedAmount < WS_HIGH_WATER) {
    ws.send(data, () => flushed(ws, flow));
    return;
  }
  watchStall(ws, flow, stall);
  if (!wait) {
    ws.send(data, () => flushed(ws, flow));
    return;
  }
  return new Promise<void>((resolve) => {
    flow.waiting.add(resolve);
    ws.send(data, () => {
      flushed(ws, flow);
      flow.waiting.delete(resolve);
      resolve();
    });
  });
}
