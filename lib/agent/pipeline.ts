// The build phase of /chat/completions (spec 7.1, "OpenAPI" mode) and runner selection:
// pull the bot config (ownership checked), resolve the answer model's key, query knowledge
// (the knowledge chunk comes first), pick a runner, run it. A bot without plugins is answered
// by the chat runner; a bot with plugins goes to the `selectRunner` hook (the worker plugs the
// ReAct runner in there).
import type { BotConfig } from '../store/bot-config.js';
import type { BotStore } from '../store/types.js';
import type { RunnerItem } from './chunks.js';
import { AgentError, CODES } from './errors.js';
import { splitQuestion } from './history.js';
import type { KeyResolver } from './app-auth.js';
import {
  knowledgeEvent,
  retrieveForBot,
  type KnowledgeClient,
  type KnowledgeResult,
} from './knowledge.js';
import { RunAbortedError, type LlmModel, type LlmStreamer } from './llm.js';
import type { CompletionInputs } from './request.js';
import { chatRunner } from './runners/chat.js';
import type { RunContext, Runner, RunnerInputs } from './runners/types.js';

export interface AgentLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
  debug(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

/** What the OpenAPI build produced; a runner selector builds its runner from it. */
export interface OpenApiBuild {
  config: BotConfig;
  /** Chat runner inputs: the summary (answer) model, instruct, knowledge, question, history. */
  inputs: RunnerInputs;
  knowledge: KnowledgeResult;
  /** The planner model (`model_config.plan`), its key resolved on first use. */
  planModel(): Promise<LlmModel>;
  /** tool_ids, mcp_server_ids/urls or flow_ids are set (knowledge alone is not a plugin). */
  hasPlugins: boolean;
}

/** Picks the runner for a bot with plugins; undefined = the chat runner. */
export type RunnerSelector = (build: OpenApiBuild, ctx: RunContext) => Promise<Runner | undefined>;

export interface PipelineDeps {
  botStore: Pick<BotStore, 'get'>;
  keys: KeyResolver;
  llm: LlmStreamer;
  knowledge: KnowledgeClient;
  logger: AgentLogger;
  selectRunner?: RunnerSelector;
}

export function hasPlugins(cfg: BotConfig): boolean {
  return (
    cfg.tool_ids.length +
      cfg.mcp_server_ids.length +
      cfg.mcp_server_urls.length +
      cfg.flow_ids.length >
    0
  );
}

async function modelOf(
  deps: PipelineDeps,
  appId: string,
  detail: BotConfig['model_config']['summary'],
  signal: AbortSignal,
): Promise<LlmModel> {
  const key = await deps.keys.resolve({ appId, domain: detail.domain, sk: detail.sk }, signal);
  return { domain: detail.domain, api: detail.api, key };
}

/** Builds and runs one /chat/completions request; yields the events of the whole run. */
export async function* runOpenApi(
  deps: PipelineDeps,
  inputs: CompletionInputs,
  ctx: RunContext,
): AsyncGenerator<RunnerItem> {
  const config = await deps.botStore.get(ctx.appId, inputs.bot_id);
  if (!config) throw new AgentError(CODES.BOT_CONFIG_NOT_FOUND);
  if (ctx.signal.aborted) throw new RunAbortedError();
  const mc = config.model_config;
  const model = await modelOf(deps, ctx.appId, mc.summary, ctx.signal);
  let plan: Promise<LlmModel> | undefined;
  const planModel = () => (plan ??= modelOf(deps, ctx.appId, mc.plan, ctx.signal));

  const { question, history } = splitQuestion(inputs.messages);
  const knowledge = await retrieveForBot(
    deps.knowledge,
    config,
    question,
    ctx.signal,
    ctx.trace,
    ctx.requestId,
  );

  const build: OpenApiBuild = {
    config,
    inputs: {
      llm: deps.llm,
      model,
      instruct: mc.instruct,
      knowledge: knowledge.text,
      question,
      history,
    },
    knowledge,
    planModel,
    hasPlugins: hasPlugins(config),
  };
  let runner: Runner | undefined;
  if (build.hasPlugins) {
    if (deps.selectRunner) runner = await deps.selectRunner(build, ctx);
    else {
      deps.logger.warn(
        'bot has plugins but no plugin runner is installed: answered by the chat runner',
        {
          sid: ctx.sid,
          request_id: ctx.requestId,
          bot_id: inputs.bot_id,
        },
      );
    }
  }
  runner ??= chatRunner(build.inputs);
  // After the plugins are built (the selector): a build failure sends only the stop chunk, as
  // the original, whose whole build precedes any output.
  if (knowledge.metadataList.length > 0) yield knowledgeEvent(question, knowledge);
  yield* runner.run(ctx);
}
