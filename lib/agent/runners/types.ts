// The runner interface shared by the chat runner and the ReAct runner:
// a runner yields RunnerEvents (content, reasoning, tool calls), one at a time or those of one
// upstream read together; the endpoint layer frames them
// (SSE, WebSocket, aggregation), builds the stop chunk, maps errors and records metrics.
import type { Context } from '@opentelemetry/api';
import type { RunnerItem } from '../chunks.js';
import type { ChatMessage } from '../history.js';
import type { LlmCallOptions, LlmModel, LlmStreamer } from '../llm.js';

export interface RunContext {
  /** The request sid (every chunk id; appended to error messages). */
  sid: string;
  /** The app id (header `x-consumer-username`). */
  appId: string;
  uid: string;
  /** Aborted when the client goes away or cancels: stop all work, yield nothing more. */
  signal: AbortSignal;
  /**
   * The trace context work of this run is a child of: the run's invoke_agent span, a tool's
   * execute_tool span inside that tool. Absent when tracing is off.
   */
  trace?: Context;
  /** The request the run answers: `X-Request-Id` of its outgoing calls, `request_id` of its logs. */
  requestId?: string;
  /** Options of the run's LLM calls (parent span, usage request, per-call record). */
  llm?: LlmCallOptions;
}

export interface Runner {
  readonly name: string;
  run(ctx: RunContext): AsyncIterable<RunnerItem>;
}

/** What every runner is built from (spec 7.1 "common inputs"). */
export interface RunnerInputs {
  llm: LlmStreamer;
  /** The answer model (summary model in the OpenAPI mode). */
  model: LlmModel;
  instruct: string;
  /** Knowledge text for the prompt (chunk contexts joined by "\n"); "" when none. */
  knowledge: string;
  /** Content of the last message. */
  question: string;
  /** Every message but the last. */
  history: ChatMessage[];
}
