// POST /agent/v1/chat/completions (spec 3.1): the bot-config driven agent. Validation failures
// answer HTTP 200 with the 40002 body (spec 3.4, not SSE even with stream:true); `stream:true`
// answers SSE (spec 4.2: one-line JSON chunks, the stop chunk, `data: [DONE]`), `stream:false`
// one aggregated chat.completion (spec 4.4). Business errors never change the status (4.3).
// A client that goes away aborts the run and the upstream request; nothing more is written.
import express, { Router, type Request, type Response } from 'express';
import { Aggregator, sseFrame, SSE_DONE, type ChatChunk } from '../../agent/chunks.js';
import { headerEntries, validateCompletion } from '../../agent/request.js';
import type { ChatService } from '../../agent/service.js';
import { SidGenerator } from '../../agent/sid.js';
import type { AppDeps } from '../deps.js';
import { BodyDecodeError, RequestValidationError, validationBody } from '../validation.js';
import { methodNotAllowed } from '../errors.js';

export const CHAT_PATH = '/agent/v1/chat/completions';

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  'X-Accel-Buffering': 'no',
} as const;

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

export function sidsFor(deps: AppDeps): SidGenerator {
  return (
    deps.sid ??
    new SidGenerator({
      sub: deps.settings.SERVICE_SUB,
      location: deps.settings.SERVICE_LOCATION || 'src',
      port: deps.settings.SERVICE_PORT,
      ip: '127.0.0.1',
    })
  );
}

/**
 * Runs a request validator; on a validation error answers the 40002 body (HTTP 200), on an
 * undecodable body a 4xx JSON error, and returns undefined. Shared by both chat endpoints.
 */
export function validateOrAnswer<T>(
  req: Request,
  res: Response,
  sid: string,
  validate: (
    body: { raw: Buffer | undefined; contentType: string | undefined },
    headers: ReturnType<typeof headerEntries>,
  ) => T,
): T | undefined {
  try {
    return validate(
      { raw: req.body as Buffer | undefined, contentType: req.headers['content-type'] },
      headerEntries(req.headers),
    );
  } catch (err) {
    if (err instanceof RequestValidationError) {
      res.status(200).json(validationBody(err, sid));
      return undefined;
    }
    if (err instanceof BodyDecodeError) {
      res.status(err.status).json({ detail: err.message });
      return undefined;
    }
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

export function chatRouter(deps: AppDeps & { chat: ChatService }): Router {
  const chat = deps.chat;
  const sids = sidsFor(deps);
  const readBody = express.raw({ type: () => true, limit: deps.settings.SERVICE_MAX_BODY_SIZE });

  const handler = async (req: Request, res: Response): Promise<void> => {
    const sid = sids.next();
    const parsed = validateOrAnswer(req, res, sid, validateCompletion);
    if (!parsed) return;
    const controller = abortOnClose(res);
    const request = { sid, appId: parsed.appId, inputs: parsed.inputs };

    if (parsed.inputs.stream) {
      res.writeHead(200, SSE_HEADERS);
      res.flushHeaders();
      const outcome = await chat.completions(request, controller.signal, sseEmitter(res));
      if (outcome.aborted) {
        if (!res.destroyed) res.destroy();
        return;
      }
      res.end(SSE_DONE);
      return;
    }

    const agg = new Aggregator(sid);
    const outcome = await chat.completions(request, controller.signal, (c) => agg.add(c));
    if (outcome.aborted || res.destroyed) return;
    res.status(200).json(agg.result());
  };

  const router = Router();
  router.route('/').post(readBody, handler).all(methodNotAllowed('POST'));
  return router;
}
