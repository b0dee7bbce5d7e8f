// POST /agent/v1/custom/chat/completions (spec 3.2): the workflow agent. Validation failures
// answer HTTP 200 with the 40002 body (spec 3.4). Everything else is ALWAYS streamed, whatever
// `stream` says, with `Content-Type: application/json` (no charset: the original's media type,
// part of the contract) and the SSE framing of spec 4.2: one-line JSON chunks, the stop chunk,
// `data: [DONE]`. The workflow engine reads it line by line until `finish_reason: "stop"`.
// A client that goes away aborts the run, its plugin calls and the upstream LLM request.
import type { Express, Request, Response } from 'express';
import { runCustom, validateCustomCompletion, type CustomDeps } from '../../agent/custom.js';
import type { ChatService } from '../../agent/service.js';
import { requestIdOf } from '../../telemetry/context.js';
import { serverSpanContext } from '../../telemetry/tracing.js';
import { rawBody } from '../body.js';
import { sidsFor, type AppDeps } from '../deps.js';
import { methodNotAllowed } from '../errors.js';
import { abortOnClose, stallPolicy, streamSse, validateOrAnswer } from '../stream.js';

export const CUSTOM_CHAT_PATH = '/agent/v1/custom/chat/completions';

export const CUSTOM_STREAM_HEADERS = {
  'Content-Type': 'application/json',
  'Cache-Control': 'no-cache',
  'X-Accel-Buffering': 'no',
} as const;

/** Mounts the route on the app's own router (no mounted sub-router). */
export function mountCustomChat(
  app: Express,
  deps: AppDeps & { chat: ChatService; custom: CustomDeps },
): void {
  const { chat, custom } = deps;
  const sids = sidsFor(deps);

  const handler = async (req: Request, res: Response): Promise<void> => {
    const sid = sids.next();
    // Quotable before the stream ends (the body carries it too).
    res.setHeader('X-Agent-Sid', sid);
    const parsed = validateOrAnswer(req, res, sid, validateCustomCompletion);
    if (!parsed) return;
    const controller = abortOnClose(res);
    const { appId, inputs } = parsed;
    const requestId = requestIdOf(req);
    // No keep-alive comment here: the workflow engine parses every line as JSON.
    await streamSse(res, CUSTOM_STREAM_HEADERS, stallPolicy(deps, sid, requestId), (emit) =>
      chat.run(
        {
          sid,
          appId,
          uid: inputs.uid,
          caller: inputs.meta_data.caller,
          agent: 'custom',
          conversationId: inputs.meta_data.caller_sid,
          trace: serverSpanContext(req),
          requestId,
          includeUsage: inputs.stream_options?.include_usage === true,
        },
        controller.signal,
        (ctx) => runCustom(custom, inputs, ctx),
        emit,
      ),
    );
  };

  app
    .route(CUSTOM_CHAT_PATH)
    .post(rawBody(deps.settings.SERVICE_MAX_BODY_SIZE), handler)
    .all(methodNotAllowed('POST'));
}
