// Builds the tools of one request (spec 7.1 step 5 / custom step 2): link tools, then MCP, then
// workflows, in that order. A failure closes what was already opened (MCP sessions).
import { parseHostAllowList, type HostAllowList } from '../../config/host-allow-list.js';
import type { Settings } from '../../config/settings.js';
import type { RunContext } from '../runners/types.js';
import { checkMcpHosts } from '../upstream-hosts.js';
import { PluginHttpClient } from './http.js';
import { buildLinkTools, type LinkToolRef } from './link.js';
import { buildMcpTools } from './mcp.js';
import type { Tool, Toolset } from './types.js';
import { buildWorkflowTools } from './workflow.js';

export type { Tool, ToolFrame, Toolset, PluginType } from './types.js';
export { toolRefs, type LinkToolRef } from './link.js';

/** The plugin services (settings) and the per-call deadline. */
export interface PluginEndpoints {
  versionsLinkUrl: string;
  runLinkUrl: string;
  listMcpUrl: string;
  runMcpUrl: string;
  getWorkflowsUrl: string;
  workflowSseBaseUrl: string;
  /** PLUGIN_TIMEOUT (ms) */
  timeoutMs: number;
  /** Keep-alive connections to the services; without one, each build opens its own (no reuse). */
  client?: PluginHttpClient;
  /** AGENT_ALLOWED_UPSTREAM_HOSTS: the hosts mcp_server_urls may name (null: any). */
  allowedHosts?: HostAllowList;
}

export type PluginSettings = Pick<
  Settings,
  | 'VERSIONS_LINK_URL'
  | 'RUN_LINK_URL'
  | 'LIST_MCP_PLUGIN_URL'
  | 'RUN_MCP_PLUGIN_URL'
  | 'GET_WORKFLOWS_URL'
  | 'WORKFLOW_SSE_BASE_URL'
  | 'PLUGIN_TIMEOUT'
  | 'AGENT_ALLOWED_UPSTREAM_HOSTS'
>;

export function pluginEndpointsFrom(s: PluginSettings): PluginEndpoints {
  return {
    versionsLinkUrl: s.VERSIONS_LINK_URL,
    runLinkUrl: s.RUN_LINK_URL,
    listMcpUrl: s.LIST_MCP_PLUGIN_URL,
    runMcpUrl: s.RUN_MCP_PLUGIN_URL,
    getWorkflowsUrl: s.GET_WORKFLOWS_URL,
    workflowSseBaseUrl: s.WORKFLOW_SSE_BASE_URL,
    timeoutMs: s.PLUGIN_TIMEOUT,
    client: new PluginHttpClient(),
    allowedHosts: parseHostAllowList(s.AGENT_ALLOWED_UPSTREAM_HOSTS),
  };
}

/** The plugins a request (or bot config) asks for. */
export interface PluginRequest {
  tools: readonly LinkToolRef[];
  mcpServerIds: readonly string[];
  mcpServerUrls: readonly string[];
  workflowIds: readonly string[];
}

/** Spec 7.1: knowledge alone is not a plugin. */
export function pluginCount(p: PluginRequest): number {
  return p.tools.length + p.mcpServerIds.length + p.mcpServerUrls.length + p.workflowIds.length;
}

export async function buildToolset(
  endpoints: PluginEndpoints,
  req: PluginRequest,
  ctx: RunContext,
): Promise<Toolset> {
  // Before any plugin request: the list of MCP servers goes to the proxy too.
  checkMcpHosts(endpoints.allowedHosts ?? null, req.mcpServerUrls);
  const timeoutMs = endpoints.timeoutMs;
  const client = endpoints.client ?? new PluginHttpClient({ keepAlive: false });
  const link = await buildLinkTools(
    { versionsUrl: endpoints.versionsLinkUrl, runUrl: endpoints.runLinkUrl, timeoutMs, client },
    req.tools,
    ctx,
  );
  const mcp = await buildMcpTools(
    { listUrl: endpoints.listMcpUrl, runUrl: endpoints.runMcpUrl, timeoutMs, client },
    req.mcpServerIds,
    req.mcpServerUrls,
    ctx,
  );
  let workflow: Tool[];
  try {
    workflow = await buildWorkflowTools(
      {
        schemaUrl: endpoints.getWorkflowsUrl,
        sseBaseUrl: endpoints.workflowSseBaseUrl,
        timeoutMs,
        client,
      },
      req.workflowIds,
      ctx,
    );
  } catch (err) {
    await mcp.close();
    throw err;
  }
  return { tools: [...link, ...mcp.tools, ...workflow], close: () => mcp.close() };
}
