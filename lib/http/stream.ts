// What the three chat transports (POST /chat/completions, POST /custom/chat/completions and the
// WebSocket chat) share to answer a run: reading and validating the request with the shared
// answer when it cannot be read, writing with back-pressure (SSE frames or WebSocket messages),
// and aborting the run when the client goes away.
import type { Request, Response } from 'express';
import type { WebSocket } from 'ws';
import { sseFrame, SSE_DONE, type ChatChunk } from '../agent/chunks.js';
import type { ChatOutcome, Emit } from '../agent/service.js';
import { answerUnreadable, decodeBody, headerEntries } from './body.js';
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

/** Writes and, when the socket's buffer is full, waits for it to drain (or close). */
export function writeWithBackpressure(res: Response, text: string): void | Promise<void> {
  if (res.destroyed || res.writableEnded) return;
  if (res.write(text)) return;
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * The SSE writer of a chat response: one frame per chunk, with back-pressure. Frames written in
 * the same turn of the event loop (several upstream chunks read at once) leave in one write
 * (corked until the turn's callbacks are done): no delay, fewer system calls.
 */
export function sseEmitter(res: Response): (c: ChatChunk) => void | Promise<void> {
  let corked = false;
  const uncork = () => {
    corked = false;
    res.uncork();
  };
  return (c) => {
    if (!corked && !res.destroyed) {
      corked = true;
      res.cork();
      process.nextTick(uncork);
    }
    return writeWithBackpressure(res, sseFrame(c));
  };
}

/**
 * Streams one run as SSE (spec 4.2) with the given headers: its chunks, then `data: [DONE]`; a
 * run aborted because the client went away ends the socket without writing more. With
 * `keepAliveMs` > 0, a silence that long gets a `: keep-alive` comment (lib/http/keepalive.ts).
 */
export async function streamSse(
  res: Response,
  headers: Readonly<Record<string, string>>,
  run: (emit: Emit) => Promise<ChatOutcome>,
  keepAliveMs = 0,
): Promise<void> {
  res.writeHead(200, headers);
  res.flushHeaders();
  const idle = sseKeepAlive(res, keepAliveMs);
  const outcome = await run(touching(idle, sseEmitter(res))).finally(() => idle?.stop());
  if (outcome.aborted) {
    if (!res.destroyed) res.destroy();
    return;
  }
  res.end(SSE_DONE);
}

/** Past this many buffered bytes a WebSocket message waits for the socket (back-pressure). */
const WS_HIGH_WATER = 1 << 20;

/** Sends one JSON message on a WebSocket; past the high-water mark, waits until it is sent. */
export function sendWithBackpressure(ws: WebSocket, msg: unknown): void | Promise<void> {
  if (ws.readyState !== ws.OPEN) return;
  const data = JSON.stringify(msg);
  if (ws.bufferedAmount < WS_HIGH_WATER) {
    ws.send(data);
    return;
  }
  return new Promise<void>((resolve) => ws.send(data, () => resolve()));
}
