// A scripted OpenAI-compatible upstream for the ReAct tests: `POST <any>/chat/completions`,
// streamed as OpenAI does. A script is chosen by the request's `model`; which part of it answers
// is read from the request itself, so concurrent runs never mix: a summariser call (its prompt
// carries the reasoning process) gets `summary`, a planner call gets `plan[n]` where n is the
// number of observations already in its scratchpad (loop 1: plan[0]; past the end: the last).
// A turn is a list of deltas; a string is content, sent in pieces of `piece` characters (so the
// markers arrive split across chunks). Every request is recorded.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Delta = string | { content?: string; reasoning?: string };
export type Turn = Delta[] | { status: number; body: unknown } | { hang: true };

export interface Script {
  plan: Turn[];
  summary?: Turn;
  /** Content pieces of at most this many characters (default 6). */
  piece?: number;
  /**
   * Token usage reported in a last chunk without choices (OpenAI's include_usage chunk): when the
   * request asked for it (stream_options.include_usage), or on every answer with `always`.
   */
  usage?: { prompt_tokens: number; completion_tokens: number; always?: boolean };
}

export interface LlmCall {
  model: string;
  kind: 'plan' | 'summary';
  /** Observations in the planner's scratchpad (planner calls). */
  loop: number;
  system: string;
  user: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  closedEarly: boolean;
  /** ms between the request's end and the answer's end (the fake's own time). */
  tookMs: number;
}

export interface FakeReactLlm {
  url: string;
  calls: LlmCall[];
  script(model: string, s: Script): void;
  byModel(model: string): LlmCall[];
  close(): Promise<void>;
}

/** Marks the summariser's user prompt (lib/agent/react/prompts.ts SUMMARY_USER_PROMPT). */
export const SUMMARY_MARK = 'How the question was worked on:';

function frame(
  model: string,
  delta: Record<string, unknown>,
  finish: string | null = null,
): string {
  return `data: ${JSON.stringify({
    id: 'chatcmpl-react',
    object: 'chat.completion.chunk',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, delta: { role: 'assistant', ...delta }, finish_reason: finish }],
  })}\n\n`;
}

/** The number of completed steps in a planner prompt's scratchpad. */
export function observationsIn(user: string): number {
  const i = user.indexOf('\nQuestion: ');
  return (user.slice(i < 0 ? 0 : i).match(/\nObservation: /g) ?? []).length;
}

export async function startFakeReactLlm(opts: { record?: boolean } = {}): Promise<FakeReactLlm> {
  const scripts = new Map<string, Script>();
  const calls: LlmCall[] = [];
  const record = opts.record ?? true;
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const started = performance.now();
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(parts).toString('utf8')) as Record<string, unknown>;
      } catch {
        /* {} */
      }
      const model = typeof body.model === 'string' ? body.model : '';
      const messages = (Array.isArray(body.messages) ? body.messages : []) as {
        content?: string;
      }[];
      const system = String(messages[0]?.content ?? '');
      const user = String(messages[1]?.content ?? '');
      const kind = user.includes(SUMMARY_MARK) ? 'summary' : 'plan';
      const loop = kind === 'plan' ? observationsIn(user) : 0;
      const call: LlmCall = {
        model,
        kind,
        loop,
        system,
        user,
        headers: req.headers,
        body,
        closedEarly: false,
        tookMs: 0,
      };
      if (record) calls.push(call);
      res.on('close', () => {
        if (!res.writableFinished) call.closedEarly = true;
      });
      const script = scripts.get(model);
      const turn = !script
        ? { status: 404, body: { error: { message: `no script for model ${model}`, code: null } } }
        : kind === 'summary'
          ? (script.summary ?? ['(no summary)'])
          : script.plan[Math.min(loop, script.plan.length - 1)]!;
      if ('hang' in turn) return;
      if ('status' in turn) {
        res.writeHead(turn.status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(turn.body));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      const piece = script?.piece ?? 6;
      let out = '';
      for (const d of turn) {
        if (typeof d === 'string') {
          for (let i = 0; i < d.length; i += piece)
            out += frame(model, { content: d.slice(i, i + piece) });
        } else {
          const delta: Record<string, unknown> = {};
          if (d.content !== undefined) delta.content = d.content;
          if (d.reasoning !== undefined) delta.reasoning_content = d.reasoning;
          out += frame(model, delta);
        }
      }
      out += frame(model, {}, 'stop');
      const u = script?.usage;
      const asked =
        (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
      if (u && (asked || u.always)) {
        out += `data: ${JSON.stringify({
          id: 'chatcmpl-react',
          object: 'chat.completion.chunk',
          created: Math.floor(Date.now() / 1000),
          model,
          choices: [],
          usage: {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
          },
        })}\n\n`;
      }
      out += 'data: [DONE]\n\n';
      res.end(out, () => (call.tookMs = performance.now() - started));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    calls,
    script: (model, s) => void scripts.set(model, s),
    byModel: (model) => calls.filter((c) => c.model === model),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A planner step calling a tool. */
export const act = (thought: string, action: string, input: unknown): string =>
  `Thought: ${thought}\nAction: ${action}\nAction Input: ${JSON.stringify(input)}\n`;
/** A planner step that ends the loop. */
export const finish = (thought: string, answer = 'done'): string =>
  `Thought: ${thought}\nFinal Answer: ${answer}`;
