// The chat service: what the HTTP routes and the WebSocket protocol call. It runs a request's
// events through the endpoint rules shared by every runner — one chunk per event, every id the
// sid, errors stop the output and land in the stop chunk as "<message>,<sid>" (spec 4.3), a
// client that went away gets nothing more and no stop chunk (D11) — and records the metrics of
// spec 11.2 plus the open-streams gauge. Built once per worker from the settings.
import { parseHostAllowList } from '../config/host-allow-list.js';
import type { Settings } from '../config/settings.js';
import type { BotStore } from '../store/types.js';
import { AppAuthKeyResolver, BotSkKeyResolver, type KeyResolver } from './app-auth.js';
import type { Context } from '@opentelemetry/api';
import { endAgentSpan, startAgentSpan } from '../telemetry/genai.js';
import {
  eventChunk,
  stopChunk,
  usageChunk,
  type ChatChunk,
  type ChatUsage,
  type RunnerItem,
} from './chunks.js';
import { AgentError, CODES } from './errors.js';
import { KnowledgeClient } from './knowledge.js';
import {
  LlmClient,
  RunAbortedError,
  type LlmCallOptions,
  type LlmCallRecord,
  type LlmStreamer,
} from './llm.js';
import {
  runOpenApi,
  type AgentLogger,
  type PipelineDeps,
  type RunnerSelector,
} from './pipeline.js';
import type { CompletionInputs } from './request.js';
import type { RunContext } from './runners/types.js';
import { allowListedLlm } from './upstream-hosts.js';

/** The metrics a chat run reports (a subset of the worker's metrics). */
export interface ChatMetrics {
  recordChatRequest(r: {
    appId: string;
    func: string;
    ret: number | string;
    durationMs: number;
  }): void;
  chatStreamOpened?(): void;
  chatStreamClosed?(): void;
  /** One finished LLM call (the GenAI client metrics). */
  recordGenAi?(r: LlmCallRecord): void;
}

/** `ret` label of a run whose client went away (or cancelled) before the end. */
export const RET_CLIENT_CLOSED = 'client_closed';

export interface ChatOutcome {
  /** Final code (0 = success); meaningless when aborted. */
  code: number;
  /** The client went away or cancelled: no stop chunk was sent. */
  aborted: boolean;
  /** Token usage summed over the run's LLM calls; absent when no upstream reported any. */
  usage?: ChatUsage;
}

/** Hands one chunk to the transport; a returned promise is awaited (back-pressure). */
export type Emit = (chunk: ChatChunk) => void | Promise<void>;

export interface ChatRequest {
  sid: string;
  appId: string;
  inputs: CompletionInputs;
  /** The request's trace context (its HTTP server span): the parent of the run's span. */
  trace?: Context;
  /** The request's id (`X-Request-Id`): sent on the run's outgoing calls, logged with it. */
  requestId?: string;
}

/** A run as the service sees it, whichever endpoint started it. */
export interface RunRequest {
  sid: string;
  appId: string;
  uid: string;
  caller: string;
  /** gen_ai.agent.name: the bot id, or `custom` for the custom endpoint. */
  agent?: string;
  /** gen_ai.conversation.id: meta_data.caller_sid, when the caller sent one. */
  conversationId?: string;
  /** The parent of the run's invoke_agent span. */
  trace?: Context;
  /** See ChatRequest.requestId. */
  requestId?: string;
  /** stream_options.include_usage: end the stream with a usage chunk (and ask the upstream). */
  includeUsage?: boolean;
}

export interface ChatService {
  /** Runs one /chat/completions request (OpenAPI mode) to its end. Never throws. */
  completions(req: ChatRequest, signal: AbortSignal, emit: Emit): Promise<ChatOutcome>;
  /** Runs any event source through the same rules (the custom endpoint's runs). */
  run(
    req: RunRequest,
    signal: AbortSignal,
    events: (ctx: RunContext) => AsyncIterable<RunnerItem>,
    emit: Emit,
  ): Promise<ChatOutcome>;
  /** Chat runs in progress in this worker. */
  open(): number;
  readonly keys: KeyResolver;
}

export interface ChatServiceDeps extends PipelineDeps {
  metrics?: ChatMetrics;
}

/** The stop chunk's code and message for an error (spec 4.3/5.4). */
export function finalStatus(err: unknown, sid: string): { code: number; message: string } {
  if (err instanceof AgentError) return { code: err.code, message: err.messageWithSid(sid) };
  const text = err instanceof Error ? err.message : String(err);
  return { code: CODES.INTERNAL.code, message: `${CODES.INTERNAL.message},${text},${sid}` };
}

export function createChatService(deps: ChatServiceDeps): ChatService {
  let open = 0;
  const logger = deps.logger;

  async function run(
    req: RunRequest,
    signal: AbortSignal,
    events: (ctx: RunContext) => AsyncIterable<RunnerItem>,
    emit: Emit,
  ): Promise<ChatOutcome> {
    const started = performance.now();
    const { span, context } = startAgentSpan(req.trace, {
      name: req.agent || 'agent',
      id: req.agent,
      conversationId: req.conversationId || undefined,
      sid: req.sid,
      appId: req.appId,
      caller: req.caller,
    });
    let usage: ChatUsage | undefined;
    const metrics = deps.metrics;
    const llm: LlmCallOptions = {
      parent: context,
      includeUsage: req.includeUsage,
      requestId: req.requestId,
      record(r) {
        metrics?.recordGenAi?.(r);
        if (!r.usage) return;
        usage ??= { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
        usage.prompt_tokens += r.usage.input;
        usage.completion_tokens += r.usage.output;
        usage.total_tokens += r.usage.input + r.usage.output;
      },
    };
    const ctx: RunContext = {
      sid: req.sid,
      appId: req.appId,
      uid: req.uid,
      signal,
      trace: context,
      requestId: req.requestId,
      llm,
    };
    open++;
    deps.metrics?.chatStreamOpened?.();
    let outcome: ChatOutcome;
    try {
      outcome = await drive(ctx, events, emit);
      if (usage) outcome.usage = usage;
      if (req.includeUsage && !outcome.aborted) {
        // After the stop chunk; 0 tokens when no upstream reported any.
        try {
          const p = emit(
            usageChunk(
              req.sid,
              usage ?? { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
            ),
          );
          if (p) await p;
        } catch {
          outcome.aborted = true;
        }
      }
    } finally {
      open--;
      deps.metrics?.chatStreamClosed?.();
    }
    endAgentSpan(span, {
      code: outcome.code,
      aborted: outcome.aborted,
      usage: usage && { input: usage.prompt_tokens, output: usage.completion_tokens },
    });
    deps.metrics?.recordChatRequest({
      appId: req.appId,
      func: req.caller,
      ret: outcome.aborted ? RET_CLIENT_CLOSED : outcome.code,
      durationMs: performance.now() - started,
    });
    return outcome;
  }

  async function drive(
    ctx: RunContext,
    events: (ctx: RunContext) => AsyncIterable<RunnerItem>,
    emit: Emit,
  ): Promise<ChatOutcome> {
    const { sid, signal } = ctx;
    try {
      for await (const item of events(ctx)) {
        for (const ev of Array.isArray(item) ? item : [item]) {
          if (signal.aborted) throw new RunAbortedError();
          const p = emit(eventChunk(sid, ev));
          if (p) await p;
        }
      }
      if (signal.aborted) throw new RunAbortedError();
    } catch (err) {
      if (err instanceof RunAbortedError || signal.aborted) {
        logger.debug('chat run abandoned by the client', { sid, request_id: ctx.requestId });
        return { code: 0, aborted: true };
      }
      const { code, message } = finalStatus(err, sid);
      const origin = err instanceof AgentError ? err.origin : undefined;
      const detail = err instanceof AgentError ? err.detail : undefined;
      const level = code === CODES.INTERNAL.code ? 'error' : 'warn';
      logger[level]('chat run failed', {
        sid,
        request_id: ctx.requestId,
        app_id: ctx.appId,
        code,
        message,
        ...(detail ? { detail } : {}),
        ...(origin ? { origin } : {}),
        ...(err instanceof AgentError ? {} : { err }),
      });
      try {
        const p = emit(stopChunk(sid, code, message));
        if (p) await p;
      } catch {
        return { code, aborted: true };
      }
      return { code, aborted: false };
    }
    try {
      const p = emit(stopChunk(sid, CODES.SUCCESS.code, CODES.SUCCESS.message));
      if (p) await p;
    } catch {
      return { code: 0, aborted: true };
    }
    return { code: 0, aborted: false };
  }

  return {
    keys: deps.keys,
    open: () => open,
    run,
    completions(req, signal, emit) {
      const { inputs } = req;
      return run(
        {
          sid: req.sid,
          appId: req.appId,
          uid: inputs.uid,
          caller: inputs.meta_data.caller,
          agent: inputs.bot_id,
          conversationId: inputs.meta_data.caller_sid,
          trace: req.trace,
          requestId: req.requestId,
          includeUsage: inputs.stream && inputs.stream_options?.include_usage === true,
        },
        signal,
        (ctx) => runOpenApi(deps, inputs, ctx),
        emit,
      );
    },
  };
}

type ChatSettings = Pick<
  Settings,
  | 'LLM_TIMEOUT'
  | 'LLM_MAX_RETRIES'
  | 'APP_AUTH_HOST'
  | 'APP_AUTH_ROUTER'
  | 'APP_AUTH_PROT'
  | 'APP_AUTH_API_KEY'
  | 'APP_AUTH_SECRET'
  | 'CHUNK_QUERY_URL'
  | 'PLUGIN_TIMEOUT'
  | 'AGENT_ALLOWED_UPSTREAM_HOSTS'
>;

/** The key resolver the settings ask for: app auth when APP_AUTH_HOST is set, else the bot's sk. */
export function keyResolverFrom(settings: ChatSettings): KeyResolver {
  if (!settings.APP_AUTH_HOST) return new BotSkKeyResolver();
  return new AppAuthKeyResolver({
    host: settings.APP_AUTH_HOST,
    router: settings.APP_AUTH_ROUTER,
    prot: settings.APP_AUTH_PROT,
    apiKey: settings.APP_AUTH_API_KEY,
    secret: settings.APP_AUTH_SECRET,
  });
}

/** Everything a worker's chat endpoints need, built once from the settings. */
export function chatServiceFrom(
  settings: ChatSettings,
  deps: {
    botStore: Pick<BotStore, 'get'>;
    logger: AgentLogger;
    metrics?: ChatMetrics;
    llm?: LlmStreamer;
    selectRunner?: RunnerSelector;
  },
): ChatService {
  return createChatService({
    botStore: deps.botStore,
    logger: deps.logger,
    metrics: deps.metrics,
    keys: keyResolverFrom(settings),
    llm: allowListedLlm(
      deps.llm ??
        new LlmClient({ timeoutMs: settings.LLM_TIMEOUT, maxRetries: settings.LLM_MAX_RETRIES }),
      parseHostAllowList(settings.AGENT_ALLOWED_UPSTREAM_HOSTS),
    ),
    knowledge: new KnowledgeClient({
      url: settings.CHUNK_QUERY_URL,
      timeoutMs: settings.PLUGIN_TIMEOUT,
    }),
    selectRunner: deps.selectRunner,
  });
}
