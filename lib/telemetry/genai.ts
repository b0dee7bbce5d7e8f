// The GenAI spans of a run, named and attributed by the semantic conventions pinned in
// ./semconv.ts: `invoke_agent {agent}` for a chat or ReAct run, `chat {model}` per LLM call,
// `execute_tool {tool}` per tool call (with an MCP client span `tools/call {tool}` under it for
// MCP tools), `retrieval` for a knowledge query. Parents are passed explicitly (a Context), not
// through an async context manager: the runs are async generators, whose steps resume in the
// caller's async context. A recording span's attributes are collected at its start and end and
// handed to the SDK with its end, in a batch (endSpan in ./tracing.ts). Contents (messages, tool
// arguments and results, retrieval query and documents) are recorded only when capture is on
// (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).
import type { Attributes, Context, Span, SpanKind, SpanStatus } from '@opentelemetry/api';
import {
  AGENT_APP_ID,
  AGENT_CALLER,
  AGENT_CODE,
  AGENT_PLUGIN_TYPE,
  AGENT_SID,
  ERROR_TYPE,
  GEN_AI_AGENT_ID,
  GEN_AI_AGENT_NAME,
  GEN_AI_CONVERSATION_ID,
  GEN_AI_DATA_SOURCE_ID,
  GEN_AI_INPUT_MESSAGES,
  GEN_AI_OPERATION_NAME,
  GEN_AI_OUTPUT_MESSAGES,
  GEN_AI_PROVIDER_NAME,
  GEN_AI_REQUEST_MODEL,
  GEN_AI_REQUEST_STREAM,
  GEN_AI_REQUEST_TOP_K,
  GEN_AI_RESPONSE_FINISH_REASONS,
  GEN_AI_RESPONSE_ID,
  GEN_AI_RESPONSE_MODEL,
  GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
  GEN_AI_RETRIEVAL_DOCUMENTS,
  GEN_AI_RETRIEVAL_QUERY_TEXT,
  GEN_AI_SYSTEM,
  GEN_AI_TOOL_CALL_ARGUMENTS,
  GEN_AI_TOOL_CALL_ID,
  GEN_AI_TOOL_CALL_RESULT,
  GEN_AI_TOOL_DESCRIPTION,
  GEN_AI_TOOL_NAME,
  GEN_AI_TOOL_TYPE,
  GEN_AI_USAGE_INPUT_TOKENS,
  GEN_AI_USAGE_OUTPUT_TOKENS,
  MCP_METHOD_NAME,
  MCP_SESSION_ID,
  MCP_TOOLS_CALL,
  NETWORK_TRANSPORT,
  OP_CHAT,
  OP_EXECUTE_TOOL,
  OP_INVOKE_AGENT,
  OP_RETRIEVAL,
  SERVER_ADDRESS,
  SERVER_PORT,
} from './semconv.js';
import {
  endSpan,
  errorEnding,
  holdAttributes,
  KIND,
  spanContext,
  STATUS_ERROR,
  tracer,
  tracingOptions,
} from './tracing.js';

/** Token counts as the upstream reported them. */
export interface TokenUsage {
  input: number;
  output: number;
}

/** A started span and the context its children (and the upstream's traceparent) use. */
export interface Started {
  span: Span;
  context: Context | undefined;
}

function start(
  name: string,
  kind: SpanKind,
  parent: Context | undefined,
  attributes: () => Attributes,
): Started {
  const span = tracer().startSpan(name, { kind }, parent);
  if (span.isRecording()) holdAttributes(span, attributes());
  return { span, context: spanContext(span, parent) };
}

const json = (v: unknown): string => {
  try {
    return JSON.stringify(v) ?? 'null';
  } catch {
    return String(v);
  }
};

const textParts = (content: string) => [{ type: 'text', content }];

/**
 * `gen_ai.provider.name` of an OpenAI-compatible upstream, from its host: the conventions' names
 * for the providers recognised, `openai_compatible` otherwise (the API shape is all we know).
 */
export function providerOf(host: string): string {
  const h = host.toLowerCase();
  if (h === 'api.openai.com') return 'openai';
  if (h.endsWith('.openai.azure.com')) return 'azure.ai.openai';
  if (h.endsWith('deepseek.com')) return 'deepseek';
  if (h.endsWith('api.x.ai')) return 'x_ai';
  if (h.endsWith('mistral.ai')) return 'mistral_ai';
  if (h.endsWith('groq.com')) return 'groq';
  if (h.endsWith('anthropic.com')) return 'anthropic';
  if (h.endsWith('perplexity.ai')) return 'perplexity';
  return 'openai_compatible';
}

// ---- chat {model} --------------------------------------------------------------------------

export interface ChatCall {
  provider: string;
  /** The request model (the bot's domain). */
  model: string;
  address: string;
  port: number;
  messages: readonly { role: string; content: string }[];
}

export interface ChatResult {
  responseId?: string;
  responseModel?: string;
  finishReasons: readonly string[];
  usage?: TokenUsage;
  /** Seconds from the request to the first chunk. */
  ttfcS?: number;
  /** The answer text (only collected when capture is on). */
  output?: string;
  error?: unknown;
}

export function startChatSpan(parent: Context | undefined, call: ChatCall): Started {
  return start(`${OP_CHAT} ${call.model}`, KIND.CLIENT, parent, () => {
    const a: Attributes = {
      [GEN_AI_OPERATION_NAME]: OP_CHAT,
      [GEN_AI_PROVIDER_NAME]: call.provider,
      [GEN_AI_REQUEST_MODEL]: call.model,
      [GEN_AI_REQUEST_STREAM]: true,
      [SERVER_ADDRESS]: call.address,
      [SERVER_PORT]: call.port,
    };
    const opts = tracingOptions();
    if (opts.legacyGenAi) a[GEN_AI_SYSTEM] = call.provider;
    if (opts.captureContent) {
      a[GEN_AI_INPUT_MESSAGES] = json(
        call.messages.map((m) => ({ role: m.role, parts: textParts(m.content) })),
      );
    }
    return a;
  });
}

/** Whether the answer text should be collected for the chat span (capture on, span recording). */
export function wantsOutput(span: Span): boolean {
  return span.isRecording() && tracingOptions().captureContent;
}

export function endChatSpan(span: Span, r: ChatResult): void {
  if (!span.isRecording()) return span.end();
  const a: Attributes = {};
  if (r.responseId) a[GEN_AI_RESPONSE_ID] = r.responseId;
  if (r.responseModel) a[GEN_AI_RESPONSE_MODEL] = r.responseModel;
  if (r.finishReasons.length > 0) a[GEN_AI_RESPONSE_FINISH_REASONS] = [...r.finishReasons];
  if (r.usage) {
    a[GEN_AI_USAGE_INPUT_TOKENS] = r.usage.input;
    a[GEN_AI_USAGE_OUTPUT_TOKENS] = r.usage.output;
  }
  if (r.ttfcS !== undefined) a[GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = r.ttfcS;
  if (r.output !== undefined && tracingOptions().captureContent) {
    a[GEN_AI_OUTPUT_MESSAGES] = json([
      {
        role: 'assistant',
        parts: textParts(r.output),
        finish_reason: r.finishReasons[0] ?? (r.error ? 'error' : 'stop'),
      },
    ]);
  }
  endWith(span, a, r.error);
}

/** Ends a recording span with `a`, and the marks of `error` when there is one. */
function endWith(span: Span, a: Attributes, error: unknown): void {
  if (error === undefined) return endSpan(span, a);
  const failed = errorEnding(error, AGENT_CODE);
  endSpan(span, { ...a, ...failed.attributes }, failed.status);
}

// ---- invoke_agent {name} -------------------------------------------------------------------

export interface AgentRun {
  /** The bot id (chat completions) or `custom` (the custom endpoint). */
  name: string;
  id?: string;
  conversationId?: string;
  sid: string;
  appId: string;
  caller: string;
}

export function startAgentSpan(parent: Context | undefined, run: AgentRun): Started {
  return start(`${OP_INVOKE_AGENT} ${run.name}`, KIND.INTERNAL, parent, () => {
    const a: Attributes = {
      [GEN_AI_OPERATION_NAME]: OP_INVOKE_AGENT,
      [GEN_AI_AGENT_NAME]: run.name,
      [AGENT_SID]: run.sid,
      [AGENT_APP_ID]: run.appId,
      [AGENT_CALLER]: run.caller,
    };
    if (run.id) a[GEN_AI_AGENT_ID] = run.id;
    if (run.conversationId) a[GEN_AI_CONVERSATION_ID] = run.conversationId;
    return a;
  });
}

export function endAgentSpan(
  span: Span,
  r: { code: number; aborted: boolean; usage?: TokenUsage },
): void {
  if (!span.isRecording()) return span.end();
  const a: Attributes = {};
  let status: SpanStatus | undefined;
  if (r.usage) {
    a[GEN_AI_USAGE_INPUT_TOKENS] = r.usage.input;
    a[GEN_AI_USAGE_OUTPUT_TOKENS] = r.usage.output;
  }
  if (r.aborted) a[ERROR_TYPE] = 'cancelled';
  else {
    a[AGENT_CODE] = r.code;
    if (r.code !== 0) {
      a[ERROR_TYPE] = String(r.code);
      status = { code: STATUS_ERROR };
    }
  }
  endSpan(span, a, status);
}

// ---- execute_tool {name} and tools/call {name} ---------------------------------------------

export interface ToolCallInfo {
  name: string;
  description: string;
  /** link, mcp or workflow. */
  plugin: string;
  callId: string;
  args: unknown;
}

export function startToolSpan(parent: Context | undefined, t: ToolCallInfo): Started {
  return start(`${OP_EXECUTE_TOOL} ${t.name}`, KIND.INTERNAL, parent, () => {
    const a: Attributes = {
      [GEN_AI_OPERATION_NAME]: OP_EXECUTE_TOOL,
      [GEN_AI_TOOL_NAME]: t.name,
      // Executed by the agent itself, calling an external API (the conventions' "extension").
      [GEN_AI_TOOL_TYPE]: 'extension',
      [GEN_AI_TOOL_CALL_ID]: t.callId,
      [AGENT_PLUGIN_TYPE]: t.plugin,
    };
    if (t.description) a[GEN_AI_TOOL_DESCRIPTION] = t.description;
    if (tracingOptions().captureContent) a[GEN_AI_TOOL_CALL_ARGUMENTS] = json(t.args);
    return a;
  });
}

export function endToolSpan(span: Span, r: { result?: unknown; error?: unknown }): void {
  if (!span.isRecording()) return span.end();
  const a: Attributes = {};
  if (r.result !== undefined && tracingOptions().captureContent)
    a[GEN_AI_TOOL_CALL_RESULT] = json(r.result);
  endWith(span, a, r.error);
}

export interface McpCallInfo {
  tool: string;
  args: unknown;
  sessionId?: string;
  /** The MCP server (direct) or the MCP proxy's URL. */
  url?: string;
}

/** The MCP client span of a tool call (MCP conventions: `{mcp.method.name} {target}`). */
export function startMcpCallSpan(parent: Context | undefined, c: McpCallInfo): Started {
  return start(`${MCP_TOOLS_CALL} ${c.tool}`, KIND.CLIENT, parent, () => {
    const a: Attributes = {
      [MCP_METHOD_NAME]: MCP_TOOLS_CALL,
      [GEN_AI_OPERATION_NAME]: OP_EXECUTE_TOOL,
      [GEN_AI_TOOL_NAME]: c.tool,
      [NETWORK_TRANSPORT]: 'tcp',
    };
    if (c.sessionId) a[MCP_SESSION_ID] = c.sessionId;
    addServer(a, c.url);
    if (tracingOptions().captureContent) a[GEN_AI_TOOL_CALL_ARGUMENTS] = json(c.args);
    return a;
  });
}

/** Ends an MCP client span; a result with `isError` is a tool error (error.type tool_error). */
export function endMcpCallSpan(span: Span, r: { result?: unknown; error?: unknown }): void {
  if (!span.isRecording()) return span.end();
  const a: Attributes = {};
  if (r.result !== undefined && tracingOptions().captureContent)
    a[GEN_AI_TOOL_CALL_RESULT] = json(r.result);
  if (r.error !== undefined) return endWith(span, a, r.error);
  if ((r.result as { isError?: unknown } | undefined)?.isError === true) {
    a[ERROR_TYPE] = 'tool_error';
    return endSpan(span, a, { code: STATUS_ERROR });
  }
  endSpan(span, a);
}

function addServer(a: Attributes, url: string | undefined): void {
  if (!url) return;
  try {
    const u = new URL(url);
    a[SERVER_ADDRESS] = u.hostname;
    a[SERVER_PORT] = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  } catch {
    /* no server attributes for an unparsable URL */
  }
}

// ---- retrieval -----------------------------------------------------------------------------

export interface RetrievalInfo {
  repoIds: readonly string[];
  topK: number;
  query: string;
  url: string;
}

export function startRetrievalSpan(parent: Context | undefined, q: RetrievalInfo): Started {
  return start(OP_RETRIEVAL, KIND.CLIENT, parent, () => {
    const a: Attributes = {
      [GEN_AI_OPERATION_NAME]: OP_RETRIEVAL,
      [GEN_AI_REQUEST_TOP_K]: q.topK,
    };
    if (q.repoIds.length > 0) a[GEN_AI_DATA_SOURCE_ID] = q.repoIds.join(',');
    addServer(a, q.url);
    if (tracingOptions().captureContent) a[GEN_AI_RETRIEVAL_QUERY_TEXT] = q.query;
    return a;
  });
}

export function endRetrievalSpan(
  span: Span,
  r: { documents?: () => readonly { id: string; content?: string }[]; error?: unknown },
): void {
  if (!span.isRecording()) return span.end();
  const a: Attributes = {};
  if (r.documents && r.error === undefined && tracingOptions().captureContent)
    a[GEN_AI_RETRIEVAL_DOCUMENTS] = json(r.documents());
  endWith(span, a, r.error);
}
