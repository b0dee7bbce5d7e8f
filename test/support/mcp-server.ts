// A real MCP server built with the official SDK (McpServer + Streamable HTTP server transport,
// stateful: one session per client, ids in Mcp-Session-Id), on a loopback port at /mcp. Tools:
//   add {a, b}        -> text "<a+b>"
//   echo {text}       -> text, and structuredContent {length}
//   fail {}           -> isError: true, text "it broke"
//   slow {ms}         -> waits ms, then text "slept"
// Records every tool call and the sessions opened and closed (DELETE).
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as z from 'zod';

export interface RealMcpServer {
  url: string;
  calls: { tool: string; args: Record<string, unknown>; session: string | undefined }[];
  sessionsOpened: number;
  sessionsClosed: number;
  /** The X-Request-Id header of every HTTP request received (undefined when absent). */
  requestIds: (string | undefined)[];
  close(): Promise<void>;
}

function buildServer(record: RealMcpServer['calls']): McpServer {
  const server = new McpServer({ name: 'test-mcp', version: '1.0.0' });
  server.registerTool(
    'add',
    {
      description: 'Adds two numbers',
      inputSchema: { a: z.number().describe('first'), b: z.number().describe('second') },
    },
    async ({ a, b }, extra) => {
      record.push({ tool: 'add', args: { a, b }, session: extra.sessionId });
      return { content: [{ type: 'text', text: String(a + b) }] };
    },
  );
  server.registerTool(
    'echo',
    {
      description: 'Echoes a text',
      inputSchema: { text: z.string() },
      outputSchema: { length: z.number() },
    },
    async ({ text }, extra) => {
      record.push({ tool: 'echo', args: { text }, session: extra.sessionId });
      return { content: [{ type: 'text', text }], structuredContent: { length: text.length } };
    },
  );
  server.registerTool('fail', { description: 'Always fails' }, async (extra) => {
    record.push({ tool: 'fail', args: {}, session: extra.sessionId });
    return { isError: true, content: [{ type: 'text', text: 'it broke' }] };
  });
  server.registerTool(
    'slow',
    { description: 'Waits', inputSchema: { ms: z.number() } },
    async ({ ms }, extra) => {
      record.push({ tool: 'slow', args: { ms }, session: extra.sessionId });
      await new Promise((r) => setTimeout(r, ms));
      return { content: [{ type: 'text', text: 'slept' }] };
    },
  );
  return server;
}

export async function startRealMcpServer(): Promise<RealMcpServer> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const state: Omit<RealMcpServer, 'url' | 'close'> = {
    calls: [],
    sessionsOpened: 0,
    sessionsClosed: 0,
    requestIds: [],
  };

  const httpServer = http.createServer((req, res) => {
    const rid = req.headers['x-request-id'];
    state.requestIds.push(Array.isArray(rid) ? rid[0] : rid);
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      void (async () => {
        if ((req.url ?? '').split('?')[0] !== '/mcp') {
          res.writeHead(404).end();
          return;
        }
        const sid = req.headers['mcp-session-id'];
        const id = Array.isArray(sid) ? sid[0] : sid;
        const text = Buffer.concat(parts).toString('utf8');
        const body: unknown = text ? JSON.parse(text) : undefined;
        let transport = id ? transports.get(id) : undefined;
        if (!transport) {
          if (req.method !== 'POST' || !isInitializeRequest(body)) {
            res.writeHead(400, { 'Content-Type': 'application/json' });
            res.end(
              JSON.stringify({
                jsonrpc: '2.0',
                error: { code: -32000, message: 'No valid session' },
                id: null,
              }),
            );
            return;
          }
          const t: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            onsessioninitialized: (newId) => {
              transports.set(newId, t);
              state.sessionsOpened++;
            },
          });
          t.onclose = () => {
            if (t.sessionId && transports.delete(t.sessionId)) state.sessionsClosed++;
          };
          await buildServer(state.calls).connect(t);
          transport = t;
        }
        await transport.handleRequest(req, res, body);
      })().catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
      });
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  const port = (httpServer.address() as AddressInfo).port;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/mcp`,
    close: async () => {
      for (const t of transports.values()) await t.close().catch(() => {});
      httpServer.closeAllConnections();
      await new Promise<void>((r) => httpServer.close(() => r()));
    },
  });
}
