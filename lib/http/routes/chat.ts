// POST /agent/v1/chat/completions (spec 3.1): the bot-config driven agent. Validation failures
// answer HTTP 200 with the 40002 body (spec 3.4, not SSE even with stream:true); `stream:true`
// answers SSE (spec 4.2: one-line JSON chunks, the stop chunk, `data: [DONE]`), `stream:false`
// one aggregated chat.completion (spec 4.4). Business errors never change the status (4.3).
// A client that goes away aborts the run and the upstream request; nothing more is written.
import type { Express, Request, Response } from 'express';
import { Aggregator } from '../../agent/chunks.js';
import { validateCompletion } from '../../agent/request.js';
import type { ChatService } from '../../agent/service.js';
import { requestIdOf } from '../../telemetry/context.js';
import { serverSpanContext } from '../../telemetry/tracing.js';
import { rawBody } from '../body.js';
import { sidsFor, type AppDeps } from '../deps.js';
import { methodNotAllowed } from '../errors.js';
import { abortOnClose, SSE_HEADERS, stallPolicy, streamSse, validateOrAnswer } from '../stream.js';

export const CHAT_PATH = '/agent/v1/chat/completions';

/** Mounts the route on the app's own router (no mounted sub-router). */
export function mountChat(app: Express, deps: AppDeps & { chat: ChatService }): void {
  const chat = deps.chat;
  const sids = sidsFor(deps);

  const handler = async (req: Request, res: Response): Promise<void> => {
    const sid = sids.next();
    // Quotable before the stream ends (the body carries it too).
    res.setHeader('X-Agent-Sid', sid);
    const parsed = validateOrAnswer(req, res, sid, validateCompletion);
    if (!parsed) return;
    const controller = abortOnClose(res);
    const request = {
      sid,
      appId: parsed.appId,
      inputs: parsed.inputs,
      trace: serverSpanContext(req),
      requestId: requestIdOf(req),
    };

    if (parsed.inputs.stream) {
      await streamSse(
        res,
        SSE_HEADERS,
        stallPolicy(deps, sid, request.requestId),
        (emit) => chat.completions(request, controller.signal, emit),
        deps.settings.SERVICE_SSE_KEEPALIVE_INTERVAL,
      );
      return;
    }

    const agg = new Aggregator(sid);
    const outcome = await chat.completions(request, controller.signal, (c) => agg.add(c));
    if (outcome.aborted || res.destroyed) return;
    const answer = agg.result();
    // New: the usage the upstreams reported (OpenAI's field; null as before when none did).
    if (outcome.usage) answer.usage = outcome.usage;
    res.status(200).json(answer);
  };

  app
    .route(CHAT_PATH)
    .post(rawBody(deps.settings.SERVICE_MAX_BODY_SIZE), handler)
    .all(methodNotAllowed('POST'));
}
