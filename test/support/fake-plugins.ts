// Fake plugin services for the ReAct tests, on one loopback port, recording every request as it
// arrived (query string, headers, parsed body, base64 parts of link runs decoded):
//   GET  /link/versions            link schema query (spec 8.1): the registered OpenAPI documents
//   POST /link/run                 link execution: `linkAnswer(decoded)`
//   POST /mcp/list, /mcp/call      MCP proxy (spec 8.2): the registered servers, `mcpAnswer(body)`
//   POST /workflow/protocol        workflow schema (spec 8.3): the registered flows
//   POST /workflow/v1/chat/completions   the workflow call: the flow's frames, streamed
//   POST /knowledge/query          knowledge chunk query (spec 8.4)
// `hang` holds paths that never answer (timeouts); `delayMs` delays every answer.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface PluginRequest {
  method: string;
  path: string;
  /** The raw query string (after "?"), as sent. */
  rawQuery: string;
  query: [string, string][];
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  /** Link runs: payload.message.{header,query,body} base64-decoded and parsed. */
  decoded?: { header?: unknown; query?: unknown; body?: unknown; text: Record<string, string> };
  /** ms from the request's end to the answer's end (the fake's own time). */
  tookMs: number;
  /** The caller closed the connection before the answer ended. */
  aborted: boolean;
}

export interface LinkTool {
  id: string;
  version: string;
  /** The OpenAPI document (sent as a JSON string, as the link service does). */
  document: Record<string, unknown>;
}

export interface McpServerEntry {
  server_id: string;
  server_url: string;
  server_status: number;
  server_message?: string;
  tools: { name: string; description: string; inputSchema: Record<string, unknown> }[];
}

export interface Flow {
  id: string;
  name: string;
  description: string;
  /** The start node's outputs. */
  outputs: { name: string; schema: Record<string, unknown>; required?: boolean }[];
  /** Frames of the call (objects, sent as `data: <json>`), then `data: [DONE]`. */
  frames: Record<string, unknown>[];
}

export interface FakePlugins {
  url: string;
  requests: PluginRequest[];
  at(path: string): PluginRequest[];
  linkTools: LinkTool[];
  /** Answer of the link schema query (default: code 0 with the registered tools). */
  linkVersions?: (req: PluginRequest) => unknown;
  linkAnswer: (req: PluginRequest) => unknown;
  mcpServers: McpServerEntry[];
  mcpList?: (req: PluginRequest) => unknown;
  mcpAnswer: (req: PluginRequest) => unknown;
  flows: Flow[];
  knowledgeAnswer: (req: PluginRequest) => unknown;
  hang: Set<string>;
  delayMs: number;
  close(): Promise<void>;
}

/** A workflow frame (OpenAI chunk plus `code`/`id`). */
export function wfFrame(
  content: string | null,
  reasoning?: string,
  finish: string | null = null,
): Record<string, unknown> {
  const delta: Record<string, unknown> = { role: 'assistant', content };
  if (reasoning !== undefined) delta.reasoning_content = reasoning;
  return {
    code: 0,
    message: 'success',
    id: 'wf-sid',
    created: 1,
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
}

function decodeLink(body: Record<string, unknown>): PluginRequest['decoded'] {
  const message = ((body.payload as Record<string, unknown> | undefined)?.message ?? {}) as Record<
    string,
    string
  >;
  const text: Record<string, string> = {};
  const out: NonNullable<PluginRequest['decoded']> = { text };
  for (const part of ['header', 'query', 'body'] as const) {
    if (typeof message[part] !== 'string') continue;
    text[part] = Buffer.from(message[part], 'base64').toString('utf8');
    out[part] = JSON.parse(text[part]) as unknown;
  }
  return out;
}

export async function startFakePlugins(): Promise<FakePlugins> {
  const fake: Omit<FakePlugins, 'url' | 'close'> = {
    requests: [],
    at: (path) => fake.requests.filter((r) => r.path === path),
    linkTools: [],
    linkAnswer: (req) => ({
      header: { code: 0, message: 'success', sid: 'link-sid' },
      payload: {
        text: { text: JSON.stringify({ echo: req.decoded?.query ?? req.decoded?.body ?? null }) },
      },
    }),
    mcpServers: [],
    mcpAnswer: (req) => ({
      code: 0,
      message: 'success',
      sid: req.body.sid,
      data: {
        isError: false,
        content: [{ type: 'text', text: `called ${String(req.body.tool_name)}` }],
      },
    }),
    flows: [],
    knowledgeAnswer: () => ({ code: 0, data: { results: [] } }),
    hang: new Set<string>(),
    delayMs: 0,
  };

  const json = (res: ServerResponse, status: number, body: unknown, done: () => void) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body), done);
  };

  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const started = performance.now();
      const url = req.url ?? '';
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      const rawQuery = q < 0 ? '' : url.slice(q + 1);
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(parts).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        /* {} */
      }
      const rec: PluginRequest = {
        method: req.method ?? '',
        path,
        rawQuery,
        query: [...new URLSearchParams(rawQuery).entries()],
        headers: req.headers,
        body,
        tookMs: 0,
        aborted: false,
      };
      res.on('close', () => {
        if (!res.writableFinished) rec.aborted = true;
      });
      if (path === '/link/run') rec.decoded = decodeLink(body);
      fake.requests.push(rec);
      if (fake.hang.has(path)) return;
      const done = () => (rec.tookMs = performance.now() - started);
      const answer = () => {
        switch (path) {
          case '/link/versions': {
            if (fake.linkVersions) return json(res, 200, fake.linkVersions(rec), done);
            const ids = rec.query.filter(([k]) => k === 'tool_ids').map(([, v]) => v);
            const tools = fake.linkTools
              .filter((t) => ids.includes(t.id))
              .map((t) => ({ id: t.id, version: t.version, schema: JSON.stringify(t.document) }));
            return json(res, 200, { code: 0, message: 'success', data: { tools } }, done);
          }
          case '/link/run':
            return json(res, 200, fake.linkAnswer(rec), done);
          case '/mcp/list':
            if (fake.mcpList) return json(res, 200, fake.mcpList(rec), done);
            return json(
              res,
              200,
              { code: 0, message: 'success', data: { servers: fake.mcpServers } },
              done,
            );
          case '/mcp/call':
            return json(res, 200, fake.mcpAnswer(rec), done);
          case '/workflow/protocol': {
            const flow = fake.flows.find((f) => f.id === body.flow_id);
            if (!flow)
              return json(res, 200, { code: 20404, message: 'no such flow', data: {} }, done);
            const nodes = [
              { id: 'node-start::1', data: { outputs: flow.outputs } },
              { id: 'node-end::2', data: { outputs: [] } },
            ];
            return json(
              res,
              200,
              {
                code: 0,
                message: 'success',
                data: {
                  data: {
                    id: flow.id,
                    name: flow.name,
                    description: flow.description,
                    data: { nodes },
                  },
                },
              },
              done,
            );
          }
          case '/workflow/v1/chat/completions': {
            const flow = fake.flows.find((f) => f.id === body.flow_id);
            res.writeHead(200, { 'Content-Type': 'text/event-stream' });
            let out = '';
            for (const f of flow?.frames ?? [
              { code: 20404, message: 'no such flow', id: 'x', choices: [] },
            ]) {
              out += `data: ${JSON.stringify(f)}\n\n`;
            }
            res.end(`${out}data: [DONE]\n\n`, done);
            return;
          }
          case '/knowledge/query':
            return json(res, 200, fake.knowledgeAnswer(rec), done);
          default:
            return json(res, 404, { detail: 'Not Found' }, done);
        }
      };
      if (fake.delayMs > 0) setTimeout(answer, fake.delayMs);
      else answer();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(fake, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

/** The plugin settings pointing at a fake (MCP through the proxy unless `directMcp`). */
export function pluginEnv(
  fake: { url: string },
  opts: { directMcp?: boolean; timeoutMs?: number } = {},
): Record<string, string> {
  return {
    VERSIONS_LINK_URL: `${fake.url}/link/versions`,
    RUN_LINK_URL: `${fake.url}/link/run`,
    LIST_MCP_PLUGIN_URL: opts.directMcp ? '' : `${fake.url}/mcp/list`,
    RUN_MCP_PLUGIN_URL: opts.directMcp ? '' : `${fake.url}/mcp/call`,
    GET_WORKFLOWS_URL: `${fake.url}/workflow/protocol`,
    WORKFLOW_SSE_BASE_URL: `${fake.url}/workflow/v1`,
    CHUNK_QUERY_URL: `${fake.url}/knowledge/query`,
    PLUGIN_TIMEOUT: String(opts.timeoutMs ?? 40000),
  };
}
