// AGENT_ALLOWED_UPSTREAM_HOSTS through the real CLI: the LLM and MCP hosts a request or a bot
// config names. A "trap" server on a loopback port counts every TCP connection it is offered:
// a refused host must see none (so the app-auth key never reaches it), and answer the usual
// business code (40303 for the LLM, 40026 for an MCP server). Empty setting: any host, as before.
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { chatJson, createBot } from '../support/chat.js';
import { customStream } from '../support/custom-chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import {
  APP_AUTH_API_KEY,
  APP_AUTH_ROUTER,
  APP_AUTH_SECRET,
  startFakeAppAuth,
  type FakeService,
} from '../support/fake-services.js';
import { startService, type Service } from '../support/service.js';

interface Trap {
  url: string;
  port: number;
  connections: number;
  requests: string[];
  close(): Promise<void>;
}

async function startTrap(): Promise<Trap> {
  const trap = { connections: 0, requests: [] as string[] };
  const server = http.createServer((req, res) => {
    trap.requests.push(`${req.method} ${req.url} ${String(req.headers.authorization)}`);
    res.writeHead(404).end();
  });
  server.on('connection', () => trap.connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(trap, {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

const user = (content: string) => ({ role: 'user', content });

describe('AGENT_ALLOWED_UPSTREAM_HOSTS (LLM and MCP hosts a request may name)', function () {
  this.timeout(60000);
  let llm: FakeLlm;
  let auth: FakeService;
  let trap: Trap;
  let svc: Service;
  let open: Service;

  const authEnv = () => ({
    APP_AUTH_HOST: auth.host,
    APP_AUTH_ROUTER,
    APP_AUTH_API_KEY,
    APP_AUTH_SECRET,
  });

  before(async () => {
    [llm, auth, trap] = await Promise.all([startFakeLlm(), startFakeAppAuth(), startTrap()]);
    [svc, open] = await Promise.all([
      startService({
        env: {
          ...authEnv(),
          // the fake LLM's exact port, and a wildcard that does not cover a bare IP
          AGENT_ALLOWED_UPSTREAM_HOSTS: `127.0.0.1:${llm.port}, *.example.invalid`,
        },
      }),
      startService({ env: authEnv() }),
    ]);
    await Promise.all([svc.waitReady(), open.waitReady()]);
  });
  after(async () => {
    await Promise.all([svc?.stop(), open?.stop()]);
    await Promise.all([llm?.close(), auth?.close(), trap?.close()]);
  });

  const custom = (api: string, over: Record<string, unknown> = {}) => ({
    model_config: { domain: 'ok-allow', api, api_key: '' },
    messages: [user('hi')],
    max_loop_count: 3,
    ...over,
  });

  it('the custom endpoint: an allowed host gets the app-auth key; another host (other port, other name) is refused with 40303 and never contacted', async () => {
    const ok = await customStream(svc.port, custom(llm.url), 'app-allowed');
    expect(ok.stop.code, ok.stop.message).to.equal(0);
    expect(ok.content).to.equal('Hello, world');
    expect(llm.requests.at(-1)!.headers.authorization).to.equal('Bearer k-app-allowed:s');

    const authBefore = auth.requests.length;
    const llmBefore = llm.requests.length;
    for (const api of [trap.url, `http://localhost:${llm.port}/v1`]) {
      const r = await customStream(svc.port, custom(api), 'app-refused');
      expect(r.status).to.equal(200);
      expect(r.stop.code, r.stop.message).to.equal(40303);
      expect(r.stop.message).to.match(/^Model request failed,host .+ is not allowed,/);
    }
    expect(trap.connections, trap.requests.join('\n')).to.equal(0);
    expect(llm.requests.length, 'localhost is not the 127.0.0.1 entry').to.equal(llmBefore);
    expect(auth.requests.length, 'no key is looked up for a refused host').to.equal(authBefore);
    expect(svc.logs.filter((l) => l.level === 'error')).to.deep.equal([]);
  });

  it('the bot-config endpoint: a bot whose model api names a refused host answers 40303; the host sees no connection', async () => {
    await createBot(svc.port, 'app-bot-trap', 'bot-trap', { domain: 'ok-bot', api: trap.url });
    const r = await chatJson<{ code: number; message: string }>(
      svc.port,
      { bot_id: 'bot-trap', uid: 'u1', messages: [user('hi')], stream: false },
      { 'x-consumer-username': 'app-bot-trap' },
    );
    expect(r.status).to.equal(200);
    expect(r.body.code, r.body.message).to.equal(40303);
    expect(trap.connections, trap.requests.join('\n')).to.equal(0);
  });

  it('an MCP server URL on a refused host answers 40026 before any plugin request', async () => {
    const r = await customStream(
      svc.port,
      custom(llm.url, {
        plugin: { mcp_server_urls: [`http://127.0.0.1:${trap.port}/mcp?token=planted`] },
      }),
      'app-mcp',
    );
    expect(r.stop.code, r.stop.message).to.equal(40026);
    expect(r.stop.message).to.contain('is not allowed');
    expect(r.stop.message).not.to.contain('planted');
    expect(trap.connections, trap.requests.join('\n')).to.equal(0);
  });

  it('empty (the default): any host a request names is used, as in the original', async () => {
    const r = await customStream(open.port, custom(trap.url), 'app-open');
    expect(r.stop.code).not.to.equal(0); // the trap answers 404
    expect(trap.connections).to.be.greaterThan(0);
    expect(trap.requests.at(-1)).to.contain('Bearer k-app-open:s');
  });
});
