// AGENT_ALLOWED_UPSTREAM_HOSTS applied: the LLM and MCP hosts a request (or a bot config) names
// are checked before anything is sent to them. The LLM request carries the app-auth key of the
// caller's app, so a host off the list must never see a byte of it.
import { hostAllowed, hostOf, type HostAllowList } from '../config/host-allow-list.js';
import { AgentError, CODES } from './errors.js';
import {
  deltaBatches,
  type LlmCallArgs,
  type LlmDelta,
  type LlmModel,
  type LlmStreamer,
} from './llm.js';

/** 40303 (the code of any LLM request that fails) when the model's api host is not allowed. */
export function checkLlmHost(list: HostAllowList, model: Pick<LlmModel, 'api' | 'domain'>): void {
  if (list === null || model.api === '' || hostAllowed(list, model.api)) return;
  throw new AgentError(CODES.MODEL_REQUEST, `host ${hostOf(model.api)} is not allowed`, {
    origin: {
      message: `model ${JSON.stringify(model.domain)}: api host not in AGENT_ALLOWED_UPSTREAM_HOSTS`,
      name: 'llm',
    },
  });
}

/** 40026 (the code of an MCP server that cannot be listed) for the first URL not allowed. */
export function checkMcpHosts(list: HostAllowList, urls: readonly string[]): void {
  if (list === null) return;
  const refused = urls.find((u) => !hostAllowed(list, u));
  if (refused === undefined) return;
  throw new AgentError(CODES.MCP_PROTOCOL, `MCP server host ${hostOf(refused)} is not allowed`, {
    origin: { message: 'mcp_server_urls host not in AGENT_ALLOWED_UPSTREAM_HOSTS', name: 'mcp' },
  });
}

/** An LLM streamer that refuses a model whose api host is not allowed, before connecting. */
export function allowListedLlm(llm: LlmStreamer, list: HostAllowList): LlmStreamer {
  if (list === null) return llm;
  return {
    async *stream(...args: LlmCallArgs): AsyncGenerator<LlmDelta> {
      checkLlmHost(list, args[0]);
      yield* llm.stream(...args);
    },
    async *streamBatches(...args: LlmCallArgs): AsyncGenerator<LlmDelta[]> {
      checkLlmHost(list, args[0]);
      yield* deltaBatches(llm, ...args);
    },
  };
}
