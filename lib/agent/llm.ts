// The LLM client (spec 7.2): OpenAI-compatible streaming `POST {api}/chat/completions` with a
// Bearer key and the body {"messages", "model", "stream": true} — nothing else — built on the
// official `openai` package (its SSE parsing, retries and error classes). Errors map to the
// codes of spec 5.1/5.3: a timeout is -1, the two known error-code strings 40355/40366,
// everything else (HTTP errors, error frames, malformed data, connection failures) 40303.
// The caller's AbortSignal aborts the upstream request (the upstream sees its socket close).
// The package takes ~150 ms to import: it is loaded after the worker is ready (preload()), or on
// the first call, so a worker's start-up stays fast.
import type OpenAI from 'openai';
import { AgentError, CODES, type CodeDef } from './errors.js';

type Sdk = typeof import('openai');
let sdk: Sdk | undefined;
let loading: Promise<Sdk> | undefined;
/** Loads the openai package once (idempotent). */
export function loadSdk(): Promise<Sdk> {
  return (loading ??= import('openai').then((m) => (sdk = m)));
}

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
  /** Clients kept for reuse (one per base URL and key). */
  maxClients?: number;
}

/** The interface runners depend on (a test may pass its own). */
export interface LlmStreamer {
  stream(model: LlmModel, messages: LlmMessage[], signal: AbortSignal): AsyncGenerator<LlmDelta>;
  /** Loads what the first call would otherwise wait for. */
  preload?(): Promise<unknown>;
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
  if (state.timedOut || (sdk && err instanceof sdk.APIConnectionTimeoutError)) {
    return new AgentError(CODES.TIMEOUT, undefined, {
      origin: { message: errorText(err), name: 'llm' },
      cause: err,
    });
  }
  if (state.aborted || (sdk && err instanceof sdk.APIUserAbortError)) return new RunAbortedError();
  if (sdk && err instanceof sdk.APIError) {
    const message = err.status ? `HTTP ${err.status}: ${err.message}` : err.message;
    return llmCodeError(err.code ?? err.status, message, err);
  }
  // SyntaxError (malformed data), TypeError (a chunk of the wrong shape), anything else.
  return llmCodeError(undefined, `${(err as Error)?.name ?? 'Error'}: ${errorText(err)}`, err);
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

export class LlmClient implements LlmStreamer {
  private readonly clients = new Map<string, OpenAI>();
  private readonly maxClients: number;

  constructor(private readonly opts: LlmClientOptions) {
    this.maxClients = opts.maxClients ?? 256;
  }

  /** Loads the SDK now (call after the worker is ready, so the first request does not wait). */
  preload(): Promise<unknown> {
    return loadSdk();
  }

  private client(Sdk: Sdk, api: string, key: string): OpenAI {
    const id = `${api}\u0000${key}`;
    let c = this.clients.get(id);
    if (c) return c;
    c = new Sdk.OpenAI({
      baseURL: api,
      apiKey: key,
      // Never fall back to OPENAI_* environment variables: everything comes from the bot config.
      organization: null,
      project: null,
      adminAPIKey: null,
      webhookSecret: null,
      timeout: this.opts.timeoutMs,
      maxRetries: this.opts.maxRetries,
      logLevel: 'off',
    });
    if (this.clients.size >= this.maxClients)
      this.clients.delete(this.clients.keys().next().value!);
    this.clients.set(id, c);
    return c;
  }

  async *stream(
    model: LlmModel,
    messages: LlmMessage[],
    signal: AbortSignal,
  ): AsyncGenerator<LlmDelta> {
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
    const client = this.client(sdk ?? (await loadSdk()), model.api, model.key);
    const state = { timedOut: false, aborted: false };
    const controller = new AbortController();
    const onAbort = () => {
      state.aborted = true;
      controller.abort();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    // One timer per call, pushed back on every chunk (refresh() allocates nothing).
    const arm = () => {
      if (timer) timer.refresh();
      else {
        timer = setTimeout(() => {
          state.timedOut = true;
          controller.abort();
        }, this.opts.timeoutMs);
      }
    };
    arm();
    try {
      const stream = await client.chat.completions.create(
        { messages, model: model.domain, stream: true },
        { signal: controller.signal },
      );
      for await (const chunk of stream) {
        arm();
        const raw = chunk as unknown as Record<string, unknown>;
        const bad = frameError(raw);
        if (bad) throw bad;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const delta = (choice.delta ?? {}) as { content?: unknown; reasoning_content?: unknown };
        const out: LlmDelta = {};
        if (typeof delta.reasoning_content === 'string' && delta.reasoning_content !== '')
          out.reasoning = delta.reasoning_content;
        if (typeof delta.content === 'string' && delta.content !== '') out.content = delta.content;
        if (out.content !== undefined || out.reasoning !== undefined) yield out;
      }
      // The SDK ends an aborted stream quietly: say why it ended.
      if (state.timedOut)
        throw new AgentError(CODES.TIMEOUT, undefined, {
          origin: { message: 'stream idle', name: 'llm' },
        });
      if (state.aborted || signal.aborted) throw new RunAbortedError();
    } catch (err) {
      throw mapLlmError(err, {
        timedOut: state.timedOut,
        aborted: state.aborted || signal.aborted,
      });
    } finally {
      if (timer) clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      // Ends the upstream request if the consumer stopped early.
      controller.abort();
    }
  }
}
