// The workflow-agent endpoint (spec 3.2, POST /agent/v1/custom/chat/completions): its request
// schema and validation (spec 3.4), and its build phase (spec 7.1, custom): one model (key from
// model_config.api_key, else the key resolver), the plugins, the knowledge items (queried
// concurrently), then the runner: no plugins -> chat runner; any plugin -> ReAct runner with
// max_loop_count. Transport-neutral (the HTTP route hands over the decoded body and header values).
import { isPlainObject } from '../schema/object.js';
import {
  any,
  bool,
  dict,
  int,
  list,
  model,
  optional,
  str,
  type Infer,
  type Schema,
} from '../schema/schema.js';
import { parseHostAllowList, type HostAllowList } from '../config/host-allow-list.js';
import type { KeyResolver } from './app-auth.js';
import type { RunnerItem } from './chunks.js';
import { splitQuestion } from './history.js';
import { allowListedLlm, checkLlmHost } from './upstream-hosts.js';
import { KnowledgeClient, knowledgeEvent, retrieveForItems } from './knowledge.js';
import { RunAbortedError, type LlmModel, type LlmStreamer } from './llm.js';
import type { Settings } from '../config/settings.js';
import {
  buildToolset,
  pluginCount,
  pluginEndpointsFrom,
  toolRefs,
  type PluginEndpoints,
  type PluginRequest,
  type PluginSettings,
} from './plugins/index.js';
import {
  defaultMetaData,
  messageSchema,
  metaDataSchema,
  streamOptionsField,
  validateChatRequest,
  type BodyInput,
} from './request.js';
import { chatRunner } from './runners/chat.js';
import { reactRunner } from './runners/react.js';
import type { RunContext, Runner, RunnerInputs } from './runners/types.js';

// ---- request -----------------------------------------------------------------------------------

/** `Union[str, Dict[str, Any]]`: pydantic reports the first member's error (`..., str, ...`). */
function strOrDict(): Schema<string | Record<string, unknown>> {
  const s = str();
  const d = dict(any());
  return {
    check(input, loc) {
      if (typeof input === 'string') return input;
      if (isPlainObject(input)) return d.check(input, loc);
      return s.check(input, [...loc, 'str']);
    },
  };
}

const strList = () => optional(list(str()), () => [] as string[]);

const modelConfigSchema = model({
  domain: str(),
  api: str(),
  api_key: optional(str(), () => ''),
});

const instructionSchema = model({
  reasoning: optional(str(), () => ''),
  answer: optional(str(), () => ''),
});

const matchSchema = model({ repo_ids: strList(), doc_ids: strList() });

const knowledgeItemSchema = model({
  name: str({ minLength: 1, maxLength: 128 }),
  description: str({ minLength: 0, maxLength: 1024 }),
  top_k: int({ ge: 1, le: 5 }),
  match: optional(matchSchema, () => ({ repo_ids: [] as string[], doc_ids: [] as string[] })),
  repo_type: int({ ge: 1, le: 2 }),
});

const pluginSchema = model({
  tools: optional(list(strOrDict()), () => [] as (string | Record<string, unknown>)[]),
  mcp_server_ids: strList(),
  mcp_server_urls: strList(),
  workflow_ids: strList(),
  knowledge: optional(list(knowledgeItemSchema), () => [] as Infer<typeof knowledgeItemSchema>[]),
});

/** `CustomCompletionInputs` (spec 3.2): the base fields, then the custom ones; unknown keys ignored. */
export const customCompletionSchema = model({
  uid: optional(str({ maxLength: 64 }), () => ''),
  messages: list(messageSchema),
  stream: optional(bool(), () => false),
  stream_options: streamOptionsField,
  meta_data: optional(metaDataSchema, defaultMetaData),
  model_config: modelConfigSchema,
  instruction: optional(instructionSchema, () => ({ reasoning: '', answer: '' })),
  plugin: optional(pluginSchema, () => ({
    tools: [],
    mcp_server_ids: [],
    mcp_server_urls: [],
    workflow_ids: [],
    knowledge: [],
  })),
  max_loop_count: int(),
});

export type CustomCompletionInputs = Infer<typeof customCompletionSchema>;

/** The /custom/chat/completions request (spec 3.2, 3.4). */
export function validateCustomCompletion(
  body: BodyInput,
  headers: Iterable<[string, string]>,
): { appId: string; inputs: CustomCompletionInputs } {
  return validateChatRequest(customCompletionSchema, body, headers);
}

// ---- build and run -----------------------------------------------------------------------------

export interface CustomDeps {
  llm: LlmStreamer;
  keys: KeyResolver;
  knowledge: KnowledgeClient;
  plugins: PluginEndpoints;
  /** AGENT_ALLOWED_UPSTREAM_HOSTS, checked before the key is even looked up. */
  allowedHosts?: HostAllowList;
}

/** The custom endpoint's dependencies: the chat service's LLM client and key resolver, shared. */
export function customDepsFrom(
  settings: PluginSettings & Pick<Settings, 'CHUNK_QUERY_URL'>,
  shared: { llm: LlmStreamer; keys: KeyResolver },
): CustomDeps {
  const allowedHosts = parseHostAllowList(settings.AGENT_ALLOWED_UPSTREAM_HOSTS);
  return {
    llm: allowListedLlm(shared.llm, allowedHosts),
    keys: shared.keys,
    knowledge: new KnowledgeClient({
      url: settings.CHUNK_QUERY_URL,
      timeoutMs: settings.PLUGIN_TIMEOUT,
    }),
    plugins: pluginEndpointsFrom(settings),
    allowedHosts,
  };
}

/** The plugins of a custom request (plugin.tools, MCP ids/urls, workflow ids). */
export function customPlugins(inputs: CustomCompletionInputs): PluginRequest {
  const p = inputs.plugin;
  return {
    tools: toolRefs(
      p.tools.map((t) =>
        typeof t === 'string'
          ? t
          : {
              tool_id: typeof t.tool_id === 'string' ? t.tool_id : '',
              version: typeof t.version === 'string' ? t.version : '',
            },
      ),
    ),
    mcpServerIds: p.mcp_server_ids,
    mcpServerUrls: p.mcp_server_urls,
    workflowIds: p.workflow_ids,
  };
}

/** Builds and runs one custom request; yields the events of the whole run. */
export async function* runCustom(
  deps: CustomDeps,
  inputs: CustomCompletionInputs,
  ctx: RunContext,
): AsyncGenerator<RunnerItem> {
  const mc = inputs.model_config;
  checkLlmHost(deps.allowedHosts ?? null, mc);
  const key =
    mc.api_key ||
    (await deps.keys.resolve({ appId: ctx.appId, domain: mc.domain, sk: '' }, ctx.signal));
  const llmModel: LlmModel = { domain: mc.domain, api: mc.api, key };
  if (ctx.signal.aborted) throw new RunAbortedError();

  const plugins = customPlugins(inputs);
  const toolset =
    pluginCount(plugins) > 0 ? await buildToolset(deps.plugins, plugins, ctx) : undefined;
  let runner: Runner;
  let started = false;
  try {
    const { question, history } = splitQuestion(inputs.messages);
    const knowledge = await retrieveForItems(
      deps.knowledge,
      inputs.plugin.knowledge,
      question,
      ctx.signal,
      ctx.trace,
      ctx.requestId,
    );
    const answer: RunnerInputs = {
      llm: deps.llm,
      model: llmModel,
      instruct: inputs.instruction.answer,
      knowledge: knowledge.text,
      question,
      history,
    };
    runner = toolset
      ? reactRunner({
          answer,
          planModel: llmModel,
          planInstruct: inputs.instruction.reasoning,
          toolset,
          maxLoop: inputs.max_loop_count,
        })
      : chatRunner(answer);
    if (knowledge.metadataList.length > 0) yield knowledgeEvent(question, knowledge);
    started = true;
  } finally {
    // The runner closes the toolset when it ends; before it starts, this does.
    if (!started) void toolset?.close();
  }
  yield* runner.run(ctx);
}
