// Clients of POST /agent/v1/custom/chat/completions: a whole-body reader (the body is the SSE
// framing of spec 4.2 under Content-Type application/json), and the workflow engine's own way of
// reading it (spec 1): line by line, strip `data:`, JSON.parse each non-empty line, fail on
// code != 0, accumulate content / reasoning_content / tool_calls, stop at the first chunk whose
// choices[0].finish_reason is "stop" (it never reads `[DONE]`).
import http from 'node:http';
import { parseSse, type Chunk } from './chat.js';
import { request } from './service.js';

export const CUSTOM = '/agent/v1/custom/chat/completions';

export async function customRaw(
  port: number,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; raw: string }> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const r = await request(port, CUSTOM, {
    method: 'POST',
    body: payload,
    headers: { 'Content-Type': 'application/json', ...headers },
    timeoutMs: 30_000,
  });
  return { status: r.status, headers: r.headers, raw: r.body };
}

export interface CustomResult {
  status: number;
  contentType: string;
  raw: string;
  chunks: Chunk[];
  done: boolean;
  /** The stop chunk. */
  stop: Chunk;
  content: string;
  reasoning: string;
  toolCalls: NonNullable<Chunk['choices'][0]['delta']['tool_calls']>;
}

export function summarise(
  chunks: Chunk[],
): Pick<CustomResult, 'content' | 'reasoning' | 'toolCalls'> {
  const out: Pick<CustomResult, 'content' | 'reasoning' | 'toolCalls'> = {
    content: '',
    reasoning: '',
    toolCalls: [],
  };
  for (const c of chunks) {
    const d = c.choices[0]?.delta;
    if (!d) continue;
    out.content += d.content ?? '';
    out.reasoning += d.reasoning_content ?? '';
    out.toolCalls.push(...(d.tool_calls ?? []));
  }
  return out;
}

export async function customStream(
  port: number,
  body: Record<string, unknown>,
  appId: string,
): Promise<CustomResult> {
  const r = await customRaw(port, body, { 'x-consumer-username': appId });
  const contentType = String(r.headers['content-type']);
  const { chunks, done } = parseSse(r.raw);
  const stop = chunks[chunks.length - 1]!;
  return { status: r.status, contentType, raw: r.raw, chunks, done, stop, ...summarise(chunks) };
}

export interface NodeReadResult {
  status: number;
  chunks: Chunk[];
  content: string;
  reasoning: string;
  toolCalls: CustomResult['toolCalls'];
  /** The error the node raises for a chunk with code != 0. */
  error?: { code: number; message: string };
  /** Bytes still unread when the node stopped (the `[DONE]` line it never parses). */
  stoppedAtStop: boolean;
}

/** Reads the answer as the workflow engine's agent node does. */
export function workflowNodeRead(
  port: number,
  body: unknown,
  appId: string,
): Promise<NodeReadResult> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: CUSTOM,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': appId },
        agent: false,
      },
      (res) => {
        const out: NodeReadResult = {
          status: res.statusCode ?? 0,
          chunks: [],
          content: '',
          reasoning: '',
          toolCalls: [],
          stoppedAtStop: false,
        };
        let buf = '';
        let finished = false;
        const finish = () => {
          if (finished) return;
          finished = true;
          res.destroy();
          resolve(out);
        };
        res.setEncoding('utf8');
        res.on('data', (text: string) => {
          if (finished) return;
          buf += text;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const data = line.startsWith('data:') ? line.slice(5).trim() : line;
            const chunk = JSON.parse(data) as Chunk; // "[DONE]" would throw: the node never gets there
            out.chunks.push(chunk);
            if (chunk.code !== 0) {
              out.error = { code: chunk.code, message: chunk.message };
              return finish();
            }
            const d = chunk.choices[0]!.delta;
            out.content += d.content ?? '';
            out.reasoning += d.reasoning_content ?? '';
            out.toolCalls.push(...(d.tool_calls ?? []));
            if (chunk.choices[0]!.finish_reason === 'stop') {
              out.stoppedAtStop = true;
              return finish();
            }
          }
        });
        res.on('end', finish);
        res.on('error', (e) => (finished ? undefined : reject(e)));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}
