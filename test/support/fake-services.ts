// Fake downstream services for the chat tests, on loopback ports: the knowledge service's chunk
// query (spec 8.4) and the app-auth key lookup (spec 9), which verifies the HMAC signature.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

export interface FakeService {
  url: string;
  /** host:port */
  host: string;
  requests: Recorded[];
  close(): Promise<void>;
}

async function serve(handler: (rec: Recorded, res: ServerResponse) => void): Promise<FakeService> {
  const requests: Recorded[] = [];
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8');
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        /* keep the text */
      }
      const rec = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      requests.push(rec);
      handler(rec, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
};

/**
 * Knowledge chunk query. The query text picks the answer: containing "kb-fail" -> HTTP 500;
 * "kb-none" -> no results; otherwise three results over two documents, with an image and a
 * table reference.
 */
export async function startFakeKnowledge(): Promise<FakeService> {
  return await serve((rec, res) => {
    const query = String((rec.body as { query?: unknown } | undefined)?.query ?? '');
    if (query.includes('kb-fail')) return json(res, 500, { detail: 'boom' });
    if (query.includes('kb-none')) return json(res, 200, { code: 0, data: { results: [] } });
    json(res, 200, {
      code: 0,
      data: {
        results: [
          {
            title: 'Guide',
            docId: 'doc-1',
            content: 'Step one <img1> then <tbl1>.',
            references: {
              img1: { format: 'image', link: 'http://img/1.png' },
              tbl1: { format: 'table', content: '|a|b|' },
            },
          },
          {
            title: 'FAQ',
            docId: 'doc-2',
            content: 'Answer {plain}',
            references: { plain: 'http://img/2.png' },
          },
          { title: 'Guide', docId: 'doc-1', content: 'Step two', references: {} },
        ],
      },
    });
  });
}

export const APP_AUTH_API_KEY = 'test-auth-key';
export const APP_AUTH_SECRET = 'test-auth-secret';
export const APP_AUTH_ROUTER = '/api-services/v2/app/details';

/** The signature the service must send (spec 9), computed independently of the service. */
export function expectedSignature(
  host: string,
  date: string,
  router: string,
  secret: string,
): string {
  const digest = 'SHA256=' + createHash('sha256').update(Buffer.alloc(0)).digest('base64');
  const toSign = `host: ${host}\ndate: ${date}\nGET ${router} HTTP/1.1\ndigest: ${digest}`;
  return createHmac('sha256', secret).update(toSign).digest('base64');
}

/**
 * App-auth: verifies date, digest and the HMAC signature over host/date/request-line/digest
 * (401 when wrong), then answers by app id: "auth-none" -> code 0 with an empty auth_list
 * (40040 expected), "auth-err" -> code 11200, anything else -> api_key "k-<app>", secret "s".
 */
export async function startFakeAppAuth(): Promise<FakeService & { verified: number }> {
  const state = { verified: 0 };
  let host = '';
  const svc = await serve((rec, res) => {
    const h = rec.headers;
    const [path, query = ''] = rec.url.split('?');
    const date = String(h.date ?? '');
    const auth = String(h.authorization ?? '');
    const sig = /signature="([^"]+)"/.exec(auth)?.[1] ?? '';
    const want = expectedSignature(host, date, path!, APP_AUTH_SECRET);
    const ok =
      rec.method === 'GET' &&
      path === APP_AUTH_ROUTER &&
      h.host === host &&
      h.digest === 'SHA256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' &&
      auth.startsWith(
        `api_key="${APP_AUTH_API_KEY}", algorithm="hmac-sha256", headers="host date request-line digest", `,
      ) &&
      Math.abs(Date.parse(date) - Date.now()) < 60_000 &&
      sig.length === want.length &&
      timingSafeEqual(Buffer.from(sig), Buffer.from(want));
    if (!ok) return json(res, 401, { message: 'HMAC signature cannot be verified' });
    state.verified++;
    const appId = decodeURIComponent(/app_ids=([^&]*)/.exec(query)?.[1] ?? '').replace(/,$/, '');
    if (appId.startsWith('auth-none'))
      return json(res, 200, { code: 0, data: [{ auth_list: [] }] });
    if (appId.startsWith('auth-err'))
      return json(res, 200, { code: 11200, message: 'no such app', data: [] });
    json(res, 200, {
      code: 0,
      data: [{ appid: appId, auth_list: [{ api_key: `k-${appId}`, api_secret: 's' }] }],
    });
  });
  host = svc.host;
  Object.defineProperty(svc, 'verified', { get: () => state.verified, enumerable: true });
  return svc as FakeService & { verified: number };
}
