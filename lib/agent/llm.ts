// The LLM client (spec 7.2): OpenAI-compatible streaming `POST {api}/chat/completions` with a
// Bearer key and the body {"messages", "model", "stream": true} — nothing else. node:http(s)
// with keep-alive agents, and the `eventsource-parser` library for the SSE framing; retries as
// the openai SDK does them (connection errors, 408/409/429/5xx, `retry-after`, exponential
// backoff), before any chunk arrived. Errors map to the codes of spec 5.1/5.3: a timeout is -1,
// the two known error-code strings 40355/40366, everything else (HTTP errors, error frames,
// malformed data, connection failures) 40303. The caller's AbortSignal aborts the upstream
// request (the upstream sees its socket close).
//
// Why not the `openai` package, as before: measured side by side (`npm run bench chat`), its
// fetch-based request and stream decoding cost several times the CPU per stream and most of the
// agent's added time to first token under load. The SDK stays a dev dependency: the tests use it
// as a client of our endpoint.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { urlToHttpOptions } from 'node:url';
import type { Context } from '@opentelemetry/api';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { requestIdHeader } from '../telemetry/context.js';
import {
  endChatSpan,
  providerOf,
  startChatSpan,
  wantsOutput,
  type TokenUsage,
} from '../telemetry/genai.js';
import { errorInfo, injectTraceHeaders } from '../telemetry/tracing.js';
import { AgentError, CODES, type CodeDef } from './errors.js';

export interface LlmMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A model as a runner uses it: name, OpenAI-compatible base URL, key. */
export interface LlmModel {
  domain: string;
  api: string;
  key: string;
}

/** One streamed piece: answer text and/or "thinking" text. */
export interface LlmDelta {
  content?: string;
  reasoning?: string;
}

/** The run was abandoned (client disconnect, cancel): no final chunk, no further work. */
export class RunAbortedError extends Error {
  constructor() {
    super('the run was aborted');
    this.name = 'RunAbortedError';
  }
}

export interface LlmClientOptions {
  /** LLM_TIMEOUT: the longest wait for the response (retries included) and between two chunks. */
  timeoutMs: number;
  /** LLM_MAX_RETRIES: retries before the first chunk (connection errors, 408/409/429/5xx). */
  maxRetries: number;
  /** Base URLs whose parsed endpoint is kept (default 256). */
  maxEndpoints?: number;
}

/** What one LLM call reports when it ends (the GenAI metrics, the run's token usage). */
export interface LlmCallRecord {
  provider: string;
  requestModel: string;
  serverAddress: string;
  serverPort: number;
  /** From the request to the end of the stream (or the failure), in seconds. */
  durationS: number;
  /** To the first event of the stream, in seconds; absent when none arrived. */
  ttfcS?: number;
  /** When the upstream reported it. */
  usage?: TokenUsage;
  /** error.type of a failed call (see errorInfo). */
  errorType?: string;
}

/** Per-run options of an LLM call (set by the chat service on the RunContext). */
export interface LlmCallOptions {
  /** The run's span: the parent of the call's `chat {model}` span and the upstream's traceparent. */
  parent?: Context;
  /** Ask the upstream for usage (`stream_options.include_usage`): only when the client asked. */
  includeUsage?: boolean;
  /** Sent upstream as `X-Request-Id`: the request the run answers. */
  requestId?: string;
  /** Called once when the call ends. */
  record?(r: LlmCallRecord): void;
}

/** The arguments of one LLM call. */
export type LlmCallArgs = [
  model: LlmModel,
  messages: LlmMessage[],
  signal: AbortSignal,
  call?: LlmCallOptions,
];

/** The interface runners depend on (a test may pass its own). */
export interface LlmStreamer {
  stream(...args: LlmCallArgs): AsyncGenerator<LlmDelta>;
  /** The same deltas, those of one upstream read together (see deltaBatches). */
  streamBatches?(...args: LlmCallArgs): AsyncGenerator<LlmDelta[]>;
}

/**
 * The deltas of an LLM call, those of one upstream read together where the streamer can: each
 * step through a chain of async generators costs promises (and, with AsyncLocalStorage on,
 * promise hooks), so a read's tokens go down the chain once, not once each.
 */
export function deltaBatches(llm: LlmStreamer, ...args: LlmCallArgs): AsyncGenerator<LlmDelta[]> {
  return llm.streamBatches ? llm.streamBatches(...args) : singles(llm.stream(...args));
}

async function* singles(deltas: AsyncIterable<LlmDelta>): AsyncGenerator<LlmDelta[]> {
  for await (const d of deltas) yield [d];
}

/** What the stream reported about itself, read from its chunks. */
interface StreamInfo {
  responseId?: string;
  responseModel?: string;
  finishReasons: string[];
  usage?: TokenUsage;
  /** performance.now() at the first event. */
  firstAt?: number;
  /** The answer text, collected only for a recording span with content capture on. */
  output?: string;
}

/** OpenAI's `usage` object, when it holds token counts. */
function usageOf(u: unknown): TokenUsage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const { prompt_tokens: input, completion_tokens: output } = u as Record<string, unknown>;
  if (typeof input !== 'number' && typeof output !== 'number') return undefined;
  return {
    input: typeof input === 'number' ? input : 0,
    output: typeof output === 'number' ? output : 0,
  };
}

/** Spec 5.3: only these two string codes map; everything else is 40303 (defect D4 kept). */
const CODE_MAP: Record<string, CodeDef> = {
  invalid_text_request: CODES.USER_PARAMETER,
  one_api_error: CODES.APP_AUTHORIZATION,
};

/** The business error for an upstream error code/message (the origin is logged, never shown). */
export function llmCodeError(code: unknown, message: unknown, cause?: unknown): AgentError {
  const def =
    (typeof code === 'string' && Object.hasOwn(CODE_MAP, code) ? CODE_MAP[code] : undefined) ??
    CODES.MODEL_REQUEST;
  return new AgentError(def, undefined, {
    origin: {
      code: typeof code === 'number' || typeof code === 'string' ? code : undefined,
      message:
        typeof message === 'string'
          ? message
          : message === undefined
            ? undefined
            : JSON.stringify(message),
      name: 'llm',
    },
    cause,
  });
}

/** Maps anything the client threw to an AgentError, or RunAbortedError when the caller aborted. */
export function mapLlmError(err: unknown, state: { timedOut: boolean; aborted: boolean }): Error {
  if (err instanceof AgentError || err instanceof RunAbortedError) return err;
  if (state.timedOut) {
    return new AgentError(CODES.TIMEOUT, undefined, {
      origin: { message: errorText(err), name: 'llm' },
      cause: err,
    });
  }
  if (state.aborted) return new RunAbortedError();
  // Connection errors, a response cut short, anything else.
  const code = (err as { code?: unknown })?.code;
  const name = (err as Error)?.name ?? 'Error';
  const text = `${name}${typeof code === 'string' ? ` ${code}` : ''}: ${errorText(err)}`;
  return llmCodeError(undefined, text, err);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A chunk's top-level `code` (an iFlytek error frame) when it is present and not 0. */
function frameError(chunk: Record<string, unknown>): AgentError | undefined {
  const code = chunk.code;
  if (code === undefined || code === null || code === 0 || code === '0') return undefined;
  return llmCodeError(code, chunk.message);
}

/** The most an SSE event (or a partial line) may hold before the stream is called malformed. */
const MAX_EVENT_CHARS = 8 * 1024 * 1024;
/** The most of an error answer's body that is read (for its code and message). */
const MAX_ERROR_BODY = 64 * 1024;
const USER_AGENT = 'astron-agent';

const shown = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}...` : text);

/** Retry or not, as the openai SDK decides it: `x-should-retry` first, then the status. */
function shouldRetry(res: IncomingMessage): boolean {
  const hint = res.headers['x-should-retry'];
  if (hint === 'true') return true;
  if (hint === 'false') return false;
  const s = res.statusCode ?? 0;
  return s === 408 || s === 409 || s === 429 || s >= 500;
}

/**
 * The pause before retry number `done + 1` (ms): the upstream's `retry-after-ms` or
 * `retry-after` (seconds or an HTTP date) when under a minute, else 0.5 s doubling per retry up
 * to 8 s, minus up to 25% jitter (the openai SDK's policy).
 */
export function retryDelayMs(done: number, headers?: http.IncomingHttpHeaders): number {
  let ms: number | undefined;
  const afterMs = Number(headers?.['retry-after-ms']);
  if (headers?.['retry-after-ms'] !== undefined && Number.isFinite(afterMs)) ms = afterMs;
  else if (headers?.['retry-after'] !== undefined) {
    const raw = headers['retry-after'];
    const secs = Number(raw);
    ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(raw) - Date.now();
  }
  if (ms !== undefined && ms >= 0 && ms < 60_000) return ms;
  return Math.min(500 * 2 ** done, 8000) * (1 - Math.random() * 0.25);
}

/** The error of a non-2xx answer: its JSON `error.code`/`code` when it has one, else the status. */
export function httpError(status: number, body: string): AgentError {
  let code: unknown;
  let message: unknown;
  try {
    const j = JSON.parse(body) as unknown;
    if (j && typeof j === 'object') {
      const e = (j as { error?: unknown }).error;
      const src = (e && typeof e === 'object' ? e : j) as { code?: unknown; message?: unknown };
      code = src.code;
      message = src.message ?? (typeof e === 'string' ? e : undefined);
    }
  } catch {
    /* not JSON: the text is the message */
  }
  const text = typeof message === 'string' ? message : shown(body.trim()) || '(no body)';
  return llmCodeError(code ?? status, `HTTP ${status}: ${text}`);
}

/** Reads at most `max` characters of a response body (the rest is discarded). */
async function readCapped(res: IncomingMessage, max: number): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const piece of res as AsyncIterable<string>) {
    if (text.length < max) text += piece.slice(0, max - text.length);
  }
  return text;
}

/** Where a base URL's requests go: node:http(s) request options, parsed once. */
interface Endpoint {
  tls: boolean;
  options: http.RequestOptions;
  /** server.address, server.port and gen_ai.provider.name of the spans and metrics. */
  address: string;
  port: number;
  provider: string;
}

/** LLM_TIMEOUT's idle timer: pushed back on every event, ignored while a delta is held. */
interface IdleTimer {
  arm(): void;
  hold(): void;
  release(): void;
}

/** A failed send; `staleSocket` when a reused keep-alive connection was found closed. */
type SendError = Error & { staleSocket?: boolean };

/** One upstream attempt's request: resolves with the response (any status). */
function send(
  ep: Endpoint,
  agent: http.Agent,
  headers: http.OutgoingHttpHeaders,
  body: string,
  signal: AbortSignal,
): Promise<{ res: IncomingMessage; req: http.ClientRequest }> {
  return new Promise((resolve, reject) => {
    const req = (ep.tls ? https : http).request({ ...ep.options, method: 'POST', agent, headers });
    // destroy() without an error: a socket that is being handed back to the pool must not
    // emit an 'error' nobody listens to.
    const onAbort = () => req.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    const detach = () => signal.removeEventListener('abort', onAbort);
    // A persistent listener: an error after the response (a reset mid-stream) reaches the
    // response's reader, and must never be an unhandled 'error' event.
    req.on('error', (err: SendError) => {
      detach();
      const code = (err as { code?: string }).code;
      if (req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE')) err.staleSocket = true;
      reject(err);
    });
    let answered = false;
    req.once('response', (res) => {
      answered = true;
      res.once('close', detach);
      resolve({ res, req });
    });
    // Closed with neither a response nor an error (a promise must never be left pending).
    req.once('close', () => {
      detach();
      if (!answered) reject(new Error('the request closed before a response'));
    });
    req.end(body);
  });
}

export class LlmClient implements LlmStreamer {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly maxEndpoints: number;
  // Keep-alive connections to each upstream, reused most-recent first.
  private readonly agents = {
    http: new http.Agent({ keepAlive: true, scheduling: 'lifo' }),
    https: new https.Agent({ keepAlive: true, scheduling: 'lifo' }),
  };

  constructor(private readonly opts: LlmClientOptions) {
    this.maxEndpoints = opts.maxEndpoints ?? 256;
  }

  /** `{api}/chat/completions` as request options (cached per base URL). */
  private endpoint(model: LlmModel): Endpoint {
    const known = this.endpoints.get(model.api);
    if (known) return known;
    let url: URL | undefined;
    try {
      url = new URL(`${model.api.replace(/\/+$/, '')}/chat/completions`);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new AgentError(CODES.MODEL_REQUEST, undefined, {
        origin: {
          message: `model ${JSON.stringify(model.domain)} has an api that is not an http(s) URL: ${JSON.stringify(model.api)}`,
          name: 'llm',
        },
      });
    }
    if (this.endpoints.size >= this.maxEndpoints)
      this.endpoints.delete(this.endpoints.keys().next().value!);
    const tls = url.protocol === 'https:';
    const ep: Endpoint = {
      tls,
      options: urlToHttpOptions(url),
      address: url.hostname,
      port: url.port ? Number(url.port) : tls ? 443 : 80,
      provider: providerOf(url.hostname),
    };
    this.endpoints.set(model.api, ep);
    return ep;
  }

  async *stream(...args: LlmCallArgs): AsyncGenerator<LlmDelta> {
    for await (const batch of this.streamBatches(...args)) for (const d of batch) yield d;
  }

  async *streamBatches(
    model: LlmModel,
    messages: LlmMessage[],
    signal: AbortSignal,
    call?: LlmCallOptions,
  ): AsyncGenerator<LlmDelta[]> {
    if (signal.aborted) throw new RunAbortedError();
    if (!model.api) {
      throw new AgentError(CODES.MODEL_REQUEST, undefined, {
        origin: {
          message: `model ${JSON.stringify(model.domain)} has no api (base URL)`,
          name: 'llm',
        },
      });
    }
    if (!model.key) {
      throw new AgentError(CODES.APP_AUTH, undefined, {
        origin: { message: `no key for model ${JSON.stringify(model.domain)}`, name: 'llm' },
      });
    }
    const ep = this.endpoint(model);
    const startedAt = performance.now();
    const { span, context } = startChatSpan(call?.parent, {
      provider: ep.provider,
      model: model.domain,
      address: ep.address,
      port: ep.port,
      messages,
    });
    const info: StreamInfo = { finishReasons: [] };
    if (wantsOutput(span)) info.output = '';
    let failure: Error | undefined;
    const state = { timedOut: false, aborted: false };
    const controller = new AbortController();
    const onAbort = () => {
      state.aborted = true;
      controller.abort();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    // While the consumer holds a delta (blocked on its own client's back-pressure) the upstream
    // is not read: that time is ours, not the upstream's, and never times it out.
    let held = false;
    // One timer per call, pushed back on every event (refresh() allocates nothing, and
    // reactivates a timer that fired while held).
    const arm = () => {
      if (timer) timer.refresh();
      else {
        timer = setTimeout(() => {
          if (held) return;
          state.timedOut = true;
          controller.abort();
        }, this.opts.timeoutMs);
      }
    };
    const idle: IdleTimer = {
      arm,
      hold: () => {
        held = true;
      },
      release: () => {
        held = false;
        arm();
      },
    };
    arm();
    let res: IncomingMessage | undefined;
    let complete = false;
    try {
      res = await this.open(ep, model, messages, controller.signal, context, call);
      yield* this.events(res, idle, info);
      // Aborted streams should throw, but a stream cut short may also just end.
      if (state.timedOut || state.aborted || signal.aborted) throw new Error('stream cut short');
      complete = true;
    } catch (err) {
      failure = mapLlmError(err, {
        timedOut: state.timedOut,
        aborted: state.aborted || signal.aborted,
      });
      throw failure;
    } finally {
      const ttfcS = info.firstAt === undefined ? undefined : (info.firstAt - startedAt) / 1000;
      endChatSpan(span, { ...info, ttfcS, error: failure });
      call?.record?.({
        provider: ep.provider,
        requestModel: model.domain,
        serverAddress: ep.address,
        serverPort: ep.port,
        durationS: (performance.now() - startedAt) / 1000,
        ttfcS,
        usage: info.usage,
        errorType: failure ? errorInfo(failure).type : undefined,
      });
      if (timer) clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (!res || (!res.complete && !complete)) {
        // An error, or the consumer stopped early, before the whole answer arrived: end the
        // upstream request (its connection is closed).
        controller.abort();
      } else if (!res.complete) {
        // [DONE] came before the end of the body: let the rest drain so that the connection
        // goes back to the pool, but not for long.
        const cut = setTimeout(() => res!.destroy(), 1000).unref();
        res.once('end', () => clearTimeout(cut)).resume();
      } else {
        // All of it arrived (an error frame ends the run early): read out what is left, so
        // that the connection goes back to the pool.
        res.resume();
      }
    }
  }

  /** Sends the request, retrying as the SDK would; resolves with a 2xx event-stream response. */
  private async open(
    ep: Endpoint,
    model: LlmModel,
    messages: LlmMessage[],
    signal: AbortSignal,
    trace: Context | undefined,
    call: LlmCallOptions | undefined,
  ): Promise<IncomingMessage> {
    const includeUsage = call?.includeUsage;
    // Spec 7.2's body; usage is asked for only when the client asked for it.
    const body = JSON.stringify(
      includeUsage
        ? {
            messages,
            model: model.domain,
            stream: true,
            stream_options: { include_usage: true },
          }
        : { messages, model: model.domain, stream: true },
    );
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      Accept: 'application/json',
      Authorization: `Bearer ${model.key}`,
      'User-Agent': USER_AGENT,
      ...requestIdHeader(call?.requestId),
    };
    injectTraceHeaders(trace, headers);
    const agent = ep.tls ? this.agents.https : this.agents.http;
    let staleRetried = false;
    for (let done = 0; ; done++) {
      let sent: Awaited<ReturnType<typeof send>>;
      try {
        sent = await send(ep, agent, headers, body, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        // A kept-alive connection the upstream closed while we picked it up: the request never
        // reached it. Once, at once, on a new connection, and not counted as a retry.
        if ((err as SendError).staleSocket && !staleRetried) {
          staleRetried = true;
          done--;
          continue;
        }
        if (done < this.opts.maxRetries) {
          await sleep(retryDelayMs(done), undefined, { signal });
          continue;
        }
        throw err;
      }
      const { res } = sent;
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        if (/json/i.test(String(res.headers['content-type'] ?? ''))) {
          // A JSON answer to a streaming request: an error object (some gateways answer 200).
          throw httpError(status, await readCapped(res, MAX_ERROR_BODY));
        }
        return res;
      }
      const text = await readCapped(res, MAX_ERROR_BODY);
      if (done < this.opts.maxRetries && shouldRetry(res)) {
        await sleep(retryDelayMs(done, res.headers), undefined, { signal });
        continue;
      }
      throw httpError(status, text);
    }
  }

  /** The deltas of an event stream, a read's together, until `[DONE]` or the end of the body. */
  private async *events(
    res: IncomingMessage,
    idle: IdleTimer,
    info: StreamInfo,
  ): AsyncGenerator<LlmDelta[]> {
    let queue: LlmDelta[] = [];
    let failure: Error | undefined;
    let finished = false;
    // The idle timer is pushed back once per read that held an event, not per event: the
    // events of one read arrive together, and a refresh per token was a measurable cost.
    let heard = false;
    const onEvent = (ev: EventSourceMessage) => {
      if (finished || failure) return;
      heard = true;
      info.firstAt ??= performance.now();
      if (ev.data.startsWith('[DONE]')) {
        finished = true;
        return;
      }
      let chunk: unknown;
      try {
        chunk = JSON.parse(ev.data);
      } catch (err) {
        failure = llmCodeError(undefined, `malformed data: ${shown(ev.data)}`, err);
        return;
      }
      if (!chunk || typeof chunk !== 'object') return;
      const raw = chunk as Record<string, unknown>;
      // An error object, as OpenAI sends one mid-stream, or an iFlytek error frame.
      const error = raw.error as { code?: unknown; message?: unknown } | undefined;
      if (error && typeof error === 'object') {
        failure = llmCodeError(error.code, error.message);
        return;
      }
      const bad = frameError(raw);
      if (bad) {
        failure = bad;
        return;
      }
      if (info.responseId === undefined && typeof raw.id === 'string') info.responseId = raw.id;
      if (typeof raw.model === 'string' && raw.model !== '') info.responseModel = raw.model;
      // The usage chunk (include_usage) has no choices; some upstreams report it unasked.
      if (raw.usage) info.usage = usageOf(raw.usage) ?? info.usage;
      const choice = (
        raw.choices as { delta?: unknown; finish_reason?: unknown }[] | undefined
      )?.[0];
      const reason = choice?.finish_reason;
      if (typeof reason === 'string' && reason !== '' && !info.finishReasons.includes(reason))
        info.finishReasons.push(reason);
      const delta = choice?.delta as { content?: unknown; reasoning_content?: unknown } | undefined;
      if (!delta || typeof delta !== 'object') return;
      const out: LlmDelta = {};
      if (typeof delta.reasoning_content === 'string' && delta.reasoning_content !== '')
        out.reasoning = delta.reasoning_content;
      if (typeof delta.content === 'string' && delta.content !== '') {
        out.content = delta.content;
        if (info.output !== undefined) info.output += delta.content;
      }
      if (out.content !== undefined || out.reasoning !== undefined) queue.push(out);
    };
    const parser = createParser({
      maxBufferSize: MAX_EVENT_CHARS,
      onEvent,
      onError: (err) => {
        // Unknown fields and bad `retry:` lines are ignored, as browsers do; an unbounded
        // event is not.
        if (err.type === 'max-buffer-size-exceeded' && !failure)
          failure = llmCodeError(undefined, `an event over ${MAX_EVENT_CHARS} characters`);
      },
    });
    res.setEncoding('utf8');
    for await (const text of res.iterator({ destroyOnReturn: false }) as AsyncIterable<string>) {
      parser.feed(text);
      // What came before an error is passed on first (the chunks already sent stay). The
      // timer is held while the consumer takes the deltas of this read; release() re-arms it.
      if (queue.length > 0) {
        const batch = queue;
        queue = [];
        idle.hold();
        yield batch;
        idle.release();
      } else if (heard) idle.arm();
      heard = false;
      if (failure) throw failure;
      if (finished) return;
    }
    parser.reset({ consume: true });
    if (queue.length > 0) {
      idle.hold();
      yield queue;
      idle.release();
    }
    if (failure) throw failure;
  }
}
