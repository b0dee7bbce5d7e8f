// The wire objects of the chat endpoints (spec 4): the chunk object of 4.1, the stop chunk, the
// SSE framing of 4.2, the non-streaming aggregation of 4.4 and the 40002 body of 3.4. Pure: no
// I/O, no express.
import type { RequestValidationError } from '../schema/schema.js';
import { CODES } from './errors.js';

/** A tool call as the chunk carries it (spec 4.1): `arguments` and `response` are JSON text. */
export interface ToolCall {
  index: 0;
  id: null;
  function: { arguments: string; name: string; response: string };
  type: 'tool' | 'workflow' | 'knowledge';
  reason: string;
}

export interface ChunkDelta {
  content: string | null;
  function_call: null;
  refusal: null;
  role: 'assistant';
  tool_calls: ToolCall[] | null;
  reasoning_content: string | null;
}

/** OpenAI's `usage` (new: sent when the client asks, or known). */
export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The fields a chunk and an aggregated completion share (spec 4.1, 4.4). */
interface ChatEnvelope {
  id: string;
  /** Unix time in milliseconds (spec 2.1). */
  created: number;
  model: string;
  service_tier: null;
  system_fingerprint: null;
  /** null but in the usage chunk (stream_options.include_usage) and a completion whose usage is known. */
  usage: ChatUsage | null;
  code: number;
  message: string;
  logs: string[];
  knowledge_metadata: string[];
}

export interface ChatChunk extends ChatEnvelope {
  choices: {
    delta: ChunkDelta;
    finish_reason: 'stop' | null;
    index: 0;
    logprobs: null;
  }[];
  object: 'chat.completion.chunk';
}

/**
 * What a runner yields (the endpoint layer turns events into chunks): answer text, "thinking"
 * text, or a tool call (a knowledge query, a tool or a workflow that ran).
 */
export type RunnerEvent =
  | { type: 'content'; text: string; model: string }
  | { type: 'reasoning'; text: string; model: string }
  | { type: 'tool_call'; call: ToolCall; model?: string };

/** An event, or the events of one upstream read together (one step down the chain, not many). */
export type RunnerItem = RunnerEvent | RunnerEvent[];

function chunk(
  sid: string,
  model: string,
  delta: Partial<Pick<ChunkDelta, 'content' | 'reasoning_content' | 'tool_calls'>>,
  finish: 'stop' | null,
  code: number,
  message: string,
  now: number,
): ChatChunk {
  return {
    id: sid,
    choices: [
      {
        delta: {
          content: delta.content ?? null,
          function_call: null,
          refusal: null,
          role: 'assistant',
          tool_calls: delta.tool_calls ?? null,
          reasoning_content: delta.reasoning_content ?? null,
        },
        finish_reason: finish,
        index: 0,
        logprobs: null,
      },
    ],
    created: now,
    model,
    object: 'chat.completion.chunk',
    service_tier: null,
    system_fingerprint: null,
    usage: null,
    code,
    message,
    logs: [],
    knowledge_metadata: [],
  };
}

/** The chunk of one runner event; every id is the request sid. */
export function eventChunk(sid: string, ev: RunnerEvent, now = Date.now()): ChatChunk {
  const ok = CODES.SUCCESS;
  switch (ev.type) {
    case 'content':
      return chunk(sid, ev.model, { content: ev.text }, null, ok.code, ok.message, now);
    case 'reasoning':
      return chunk(sid, ev.model, { reasoning_content: ev.text }, null, ok.code, ok.message, now);
    case 'tool_call':
      return chunk(sid, ev.model ?? '', { tool_calls: [ev.call] }, null, ok.code, ok.message, now);
  }
}

/** The final chunk (spec 4.2 step 3): always sent, also after an error; model "". */
export function stopChunk(sid: string, code: number, message: string, now = Date.now()): ChatChunk {
  return chunk(sid, '', {}, 'stop', code, message, now);
}

/**
 * The last chunk of a stream whose request had `stream_options.include_usage: true` (OpenAI's
 * shape: no choices, the run's usage), after the stop chunk and before `[DONE]`.
 */
export function usageChunk(sid: string, usage: ChatUsage, now = Date.now()): ChatChunk {
  return {
    id: sid,
    choices: [],
    created: now,
    model: '',
    object: 'chat.completion.chunk',
    service_tier: null,
    system_fingerprint: null,
    usage,
    code: CODES.SUCCESS.code,
    message: CODES.SUCCESS.message,
    logs: [],
    knowledge_metadata: [],
  };
}

/**
 * The 40002 answer of spec 3.4 (HTTP 200, application/json, never SSE; also the bot-config
 * endpoint's): a chunk without choices whose message is the issue; `created` is in seconds here,
 * unlike the chunks of a run (milliseconds).
 */
export function validationBody(err: RequestValidationError, sid: string, nowMs = Date.now()) {
  return {
    id: sid,
    choices: [],
    created: Math.floor(nowMs / 1000),
    model: '',
    object: 'chat.completion.chunk',
    service_tier: null,
    system_fingerprint: null,
    usage: null,
    code: CODES.VALIDATION.code,
    message: err.message,
    logs: [],
    knowledge_metadata: [],
  };
}

// ---- SSE (spec 4.2) ----------------------------------------------------------------------------

/** `data: <one-line JSON>\n\n`; non-ASCII stays raw UTF-8 (JSON.stringify never escapes it). */
export function sseFrame(obj: unknown): string {
  return `data: ${JSON.stringify(obj)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';

const q = JSON.stringify;

/**
 * sseFrame(c) for a chunk, byte for byte: the frames of a run's text are written from a template,
 * since JSON.stringify of the whole nested object was the largest JavaScript cost of a streamed
 * token. Only the shape chunk() builds with no tool call takes the template (the order of its
 * keys is the template's); anything else (a tool call, usage, logs) is stringified whole.
 */
export function chunkFrame(c: ChatChunk): string {
  const choice = c.choices.length === 1 ? c.choices[0]! : undefined;
  const d = choice?.delta;
  if (
    !d ||
    d.tool_calls !== null ||
    c.usage !== null ||
    c.logs.length !== 0 ||
    c.knowledge_metadata.length !== 0 ||
    !Number.isSafeInteger(c.created) ||
    !Number.isSafeInteger(c.code)
  )
    return sseFrame(c);
  const content = d.content === null ? 'null' : q(d.content);
  const reasoning = d.reasoning_content === null ? 'null' : q(d.reasoning_content);
  const finish = choice.finish_reason === null ? 'null' : q(choice.finish_reason);
  return (
    `data: {"id":${q(c.id)},"choices":[{"delta":{"content":${content},"function_call":null,` +
    `"refusal":null,"role":"assistant","tool_calls":null,"reasoning_content":${reasoning}},` +
    `"finish_reason":${finish},"index":0,"logprobs":null}],"created":${c.created},` +
    `"model":${q(c.model)},"object":"chat.completion.chunk","service_tier":null,` +
    `"system_fingerprint":null,"usage":null,"code":${c.code},"message":${q(c.message)},` +
    `"logs":[],"knowledge_metadata":[]}\n\n`
  );
}

// ---- Python-style JSON text (the inner strings of tool calls) --------------------------------

/**
 * `json.dumps(value, ensure_ascii=False)`: `", "` and `": "` separators, non-ASCII raw (spec 4.2
 * note). Numbers as JavaScript prints them (Python would print an integral float as `1.0`).
 */
export function pyJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return 'NaN';
    if (!Number.isFinite(value)) return value > 0 ? 'Infinity' : '-Infinity';
    return JSON.stringify(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (Array.isArray(value)) return `[${value.map(pyJson).join(', ')}]`;
  if (typeof value === 'object') {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (v === undefined) continue;
      parts.push(`${JSON.stringify(k)}: ${pyJson(v)}`);
    }
    return `{${parts.join(', ')}}`;
  }
  return JSON.stringify(String(value));
}

// ---- non-streaming aggregation (spec 4.4) -----------------------------------------------------

export interface AggregatedToolCall {
  id: string;
  function: { arguments: string; name: string; response: string };
  type: string;
  reason: string;
}

export interface ChatCompletion extends ChatEnvelope {
  choices: {
    finish_reason: 'stop';
    index: 0;
    logprobs: null;
    message: {
      content: string;
      refusal: null;
      role: 'assistant';
      annotations: null;
      audio: null;
      function_call: null;
      tool_calls: AggregatedToolCall[];
      reasoning_content: string;
    };
  }[];
  object: 'chat.completion';
}

/** Folds the chunks of one run into a `chat.completion` (spec 4.4 rules). */
export class Aggregator {
  private content = '';
  private reasoning = '';
  private readonly toolCalls: AggregatedToolCall[] = [];
  private model = '';
  private code: number = CODES.SUCCESS.code;
  private message: string = CODES.SUCCESS.message;
  private knowledge: string[] = [];

  constructor(
    private readonly sid: string,
    private readonly created = Date.now(),
  ) {}

  add(c: ChatChunk): void {
    if (c.choices.length === 0) return;
    const delta = c.choices[0]!.delta;
    if (delta.content) this.content += delta.content;
    if (delta.reasoning_content) this.reasoning += delta.reasoning_content;
    for (const t of delta.tool_calls ?? []) {
      if (!t.function) continue;
      this.toolCalls.push({ id: '', function: t.function, type: t.type, reason: t.reason });
    }
    if (c.model) this.model = c.model;
    this.code = c.code;
    this.message = c.message;
    if (c.knowledge_metadata.length > 0) this.knowledge = c.knowledge_metadata;
  }

  result(): ChatCompletion {
    return {
      id: this.sid,
      choices: [
        {
          finish_reason: 'stop',
          index: 0,
          logprobs: null,
          message: {
            content: this.content,
            refusal: null,
            role: 'assistant',
            annotations: null,
            audio: null,
            function_call: null,
            tool_calls: this.toolCalls,
            reasoning_content: this.reasoning,
          },
        },
      ],
      created: this.created,
      model: this.model,
      object: 'chat.completion',
      service_tier: null,
      system_fingerprint: null,
      usage: null,
      code: this.code,
      message: this.message,
      logs: [],
      knowledge_metadata: this.knowledge,
    };
  }
}
