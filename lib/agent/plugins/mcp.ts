// MCP tools (spec 8.2). Two ways to reach MCP servers:
//  - through the MCP proxy of the original (LIST_MCP_PLUGIN_URL / RUN_MCP_PLUGIN_URL): one list
//    call for every server id and URL, one call per tool run; the proxy's answer is the
//    observation;
//  - new: with no proxy configured, every `mcp_server_urls` entry is reached directly with the
//    official MCP TypeScript SDK over Streamable HTTP: one session per server for the whole
//    request (initialize, tools/list, tools/call ...), closed when the run ends. A call's
//    observation has the proxy's shape, so the planner sees the same thing either way.
// Codes: a list that fails (code != 0, a server not ok, unreachable, deadline) is 40026; a call
// past the deadline is 40027; a JSON-RPC error the server answers is the observation.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { isPlainObject } from '../../schema/object.js';
import { requestIdHeader } from '../../telemetry/context.js';
import { endMcpCallSpan, startMcpCallSpan, type McpCallInfo } from '../../telemetry/genai.js';
import { injectTraceHeaders } from '../../telemetry/tracing.js';
import { version } from '../../version.js';
import { AgentError, CODES } from '../errors.js';
import { RunAbortedError } from '../llm.js';
import type { RunContext } from '../runners/types.js';
import { causeText, deadline, postJson, type PluginHttpClient } from './http.js';
import {
  EMPTY_TOOLSET,
  makeTool,
  type Tool,
  type ToolFrame,
  type ToolParameters,
  type Toolset,
} from './types.js';

export interface McpOptions {
  /** LIST_MCP_PLUGIN_URL; empty = no proxy: server URLs are reached directly. */
  listUrl: string;
  /** RUN_MCP_PLUGIN_URL */
  runUrl: string;
  /** PLUGIN_TIMEOUT */
  timeoutMs: number;
  client: PluginHttpClient;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (isPlainObject(v) ? v : {});

/** `inputSchema.properties` / `inputSchema.required` verbatim. */
export function mcpParameters(inputSchema: unknown): ToolParameters {
  const s = obj(inputSchema);
  return {
    type: 'object',
    properties: isPlainObject(s.properties) ? s.properties : {},
    required: Array.isArray(s.required) ? (s.required as string[]) : [],
  };
}

/**
 * The MCP client span (`tools/call {tool}`) around a call's frames, a child of the tool's
 * execute_tool span; a result with `isError` marks it failed.
 */
async function* traced(
  ctx: RunContext,
  info: McpCallInfo,
  run: (trace: RunContext['trace']) => AsyncIterable<ToolFrame>,
): AsyncGenerator<ToolFrame> {
  const { span, context } = startMcpCallSpan(ctx.trace, info);
  let result: unknown;
  let error: unknown;
  try {
    for await (const f of run(context)) {
      result ??= obj(f.observation).data ?? f.observation;
      yield f;
    }
  } catch (err) {
    error = err;
    throw err;
  } finally {
    endMcpCallSpan(span, { result, error });
  }
}

export async function buildMcpTools(
  opts: McpOptions,
  serverIds: readonly string[],
  serverUrls: readonly string[],
  ctx: RunContext,
): Promise<Toolset> {
  if (serverIds.length + serverUrls.length === 0) return EMPTY_TOOLSET;
  if (opts.listUrl)
    return {
      tools: await proxyTools(opts, serverIds, serverUrls, ctx),
      close: () => Promise.resolve(),
    };
  if (serverIds.length > 0) {
    throw new AgentError(
      CODES.INTERNAL,
      'LIST_MCP_PLUGIN_URL is not set: mcp_server_ids need the MCP proxy',
    );
  }
  return await directTools(opts, serverUrls, ctx);
}

// ---- through the proxy ---------------------------------------------------------------------------

function listFailed(message: string, code?: unknown): AgentError {
  return new AgentError(CODES.MCP_PROTOCOL, undefined, {
    origin: {
      code: typeof code === 'number' || typeof code === 'string' ? code : undefined,
      message,
      name: 'mcp',
    },
  });
}

async function proxyTools(
  opts: McpOptions,
  ids: readonly string[],
  urls: readonly string[],
  ctx: RunContext,
): Promise<Tool[]> {
  const answer = obj(
    await postJson(
      opts.listUrl,
      { sid: ctx.sid, mcp_server_ids: ids, mcp_server_urls: urls },
      {
        client: opts.client,
        what: 'MCP server list',
        timeoutMs: opts.timeoutMs,
        timeoutCode: CODES.MCP_PROTOCOL,
        signal: ctx.signal,
      },
    ),
  );
  if (answer.code !== 0)
    throw listFailed(
      `MCP list answered code ${String(answer.code)}: ${String(answer.message ?? '')}`,
      answer.code,
    );
  const servers = obj(answer.data).servers;
  const tools: Tool[] = [];
  for (const s of Array.isArray(servers) ? servers : []) {
    const server = obj(s);
    const serverId = typeof server.server_id === 'string' ? server.server_id : '';
    const serverUrl = typeof server.server_url === 'string' ? server.server_url : '';
    if (server.server_status !== 0) {
      throw listFailed(
        `MCP server ${serverId || serverUrl} status ${String(server.server_status)}: ${String(server.server_message ?? '')}`,
      );
    }
    for (const t of Array.isArray(server.tools) ? server.tools : []) {
      const tool = obj(t);
      const name = typeof tool.name === 'string' ? tool.name : '';
      const description = typeof tool.description === 'string' ? tool.description : '';
      tools.push(
        makeTool('mcp', name, description, mcpParameters(tool.inputSchema), (args, runCtx) =>
          traced(runCtx, { tool: name, args, url: opts.runUrl }, async function* (trace) {
            if (!opts.runUrl) throw new AgentError(CODES.INTERNAL, 'RUN_MCP_PLUGIN_URL is not set');
            const headers: Record<string, string> = {};
            injectTraceHeaders(trace, headers);
            const observation = await postJson(
              opts.runUrl,
              {
                mcp_server_id: serverId,
                mcp_server_url: serverUrl,
                tool_name: name,
                tool_args: args,
                sid: runCtx.sid,
              },
              {
                client: opts.client,
                what: 'MCP tool call',
                timeoutMs: opts.timeoutMs,
                timeoutCode: CODES.MCP_RUN,
                signal: runCtx.signal,
              },
              headers,
            );
            yield { observation };
          }),
        ),
      );
    }
  }
  return tools;
}

// ---- directly, with the MCP SDK ----------------------------------------------------------------

type Sdk = {
  Client: typeof Client;
  StreamableHTTPClientTransport: typeof StreamableHTTPClientTransport;
  McpError: typeof import('@modelcontextprotocol/sdk/types.js').McpError;
  RequestTimeout: number;
};

let sdk: Promise<Sdk> | undefined;

/** The SDK is loaded on first use: workers that never reach an MCP server never pay for it. */
function loadSdk(): Promise<Sdk> {
  sdk ??= Promise.all([
    import('@modelcontextprotocol/sdk/client/index.js'),
    import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    import('@modelcontextprotocol/sdk/types.js'),
  ]).then(([c, t, types]) => ({
    Client: c.Client,
    StreamableHTTPClientTransport: t.StreamableHTTPClientTransport,
    McpError: types.McpError,
    RequestTimeout: types.ErrorCode.RequestTimeout,
  }));
  return sdk;
}

interface Session {
  url: string;
  client: Client;
  transport: StreamableHTTPClientTransport;
}

async function closeSession(s: Session): Promise<void> {
  try {
    await s.transport.terminateSession(); // DELETE; a server may answer 405 (no session ids)
  } catch {
    /* the session ends when the server times it out */
  }
  await s.client.close().catch(() => {});
}

async function openSession(
  lib: Sdk,
  url: string,
  opts: McpOptions,
  ctx: RunContext,
): Promise<{ session: Session; tools: Tool[] }> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw listFailed(`MCP server URL ${JSON.stringify(url)} is not a URL`);
  }
  const client = new lib.Client({ name: 'astron-agent', version: version() }, { capabilities: {} });
  const transport = new lib.StreamableHTTPClientTransport(target, {
    requestInit: { headers: requestIdHeader(ctx.requestId) },
  });
  const session: Session = { url, client, transport };
  const d = deadline(ctx.signal, opts.timeoutMs);
  try {
    const req = { signal: d.signal, timeout: opts.timeoutMs };
    await client.connect(transport, req);
    const listed: Json[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor === undefined ? undefined : { cursor }, req);
      listed.push(...(page.tools as unknown as Json[]));
      cursor = page.nextCursor;
    } while (cursor);
    const tools = listed.map((t) => {
      const name = typeof t.name === 'string' ? t.name : '';
      const description = typeof t.description === 'string' ? t.description : '';
      return makeTool('mcp', name, description, mcpParameters(t.inputSchema), (args, runCtx) =>
        traced(runCtx, { tool: name, args, url, sessionId: transport.sessionId }, () =>
          callDirect(lib, session, name, args, opts, runCtx),
        ),
      );
    });
    return { session, tools };
  } catch (err) {
    void closeSession(session);
    if (ctx.signal.aborted && !d.state.timedOut) throw new RunAbortedError();
    const why = d.state.timedOut ? `timed out after ${opts.timeoutMs} ms` : causeText(err);
    throw listFailed(`MCP server ${url}: ${why}`);
  } finally {
    d.dispose();
  }
}

async function* callDirect(
  lib: Sdk,
  s: Session,
  name: string,
  args: Json,
  opts: McpOptions,
  ctx: RunContext,
) {
  const d = deadline(ctx.signal, opts.timeoutMs);
  let result: Json;
  try {
    result = (await s.client.callTool({ name, arguments: args }, undefined, {
      signal: d.signal,
      timeout: opts.timeoutMs,
    })) as Json;
  } catch (err) {
    const timedOut =
      d.state.timedOut || (err instanceof lib.McpError && err.code === lib.RequestTimeout);
    if (timedOut) {
      throw new AgentError(CODES.MCP_RUN, undefined, {
        origin: {
          message: `MCP tool ${name} at ${s.url} timed out after ${opts.timeoutMs} ms`,
          name: 'mcp',
        },
        cause: err,
      });
    }
    if (ctx.signal.aborted) throw new RunAbortedError();
    // The server answered with a JSON-RPC error (unknown tool, bad arguments): the planner sees it.
    if (err instanceof lib.McpError)
      yield { observation: { code: err.code, message: err.message, sid: ctx.sid, data: null } };
    else
      throw new AgentError(CODES.INTERNAL, `MCP tool call failed: ${causeText(err)}`, {
        cause: err,
      });
    return;
  } finally {
    d.dispose();
  }
  const observation: Json = {
    code: 0,
    message: 'success',
    sid: ctx.sid,
    data: {
      isError: result.isError === true,
      content: Array.isArray(result.content) ? result.content : [],
    },
  };
  if (result.structuredContent !== undefined)
    (observation.data as Json).structuredContent = result.structuredContent;
  yield { observation };
}

async function directTools(
  opts: McpOptions,
  urls: readonly string[],
  ctx: RunContext,
): Promise<Toolset> {
  const lib = await loadSdk();
  const opened = await Promise.allSettled(urls.map((u) => openSession(lib, u, opts, ctx)));
  const sessions = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value.session] : []));
  const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) {
    await Promise.all(sessions.map(closeSession));
    throw failed.reason;
  }
  const tools = opened.flatMap((o) => (o.status === 'fulfilled' ? o.value.tools : []));
  let closing: Promise<void> | undefined;
  return {
    tools,
    close: () => (closing ??= Promise.all(sessions.map(closeSession)).then(() => undefined)),
  };
}
