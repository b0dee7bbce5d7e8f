// Hostile and slow clients never hurt the service (issue 13): bodies nested thousands of levels
// deep, SSE and WebSocket readers that stop reading, a WebSocket asking for more chats at once
// than it may run. The real CLI (one worker, embedded SQLite) and the fake LLM, on loopback.
import { expect } from 'chai';
import { runId } from '../support/bot-config.js';
import { CHAT, createBot, WsChatClient } from '../support/chat.js';
import { CUSTOM } from '../support/custom-chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import { request, startService, type Service } from '../support/service.js';

const BOT_CONFIG = '/agent/v1/bot-config';
const MAX_JSON_DEPTH = 200;

describe('hostile clients (1 worker, fake upstream, SQLite)', function () {
  this.timeout(60_000);
  let svc: Service;
  let llm: FakeLlm;
  const id = runId();
  const app = `app_hostile_${id}`;
  const bot = (name: string) => `bot_${name}_${id}`;

  before(async () => {
    llm = await startFakeLlm();
    svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_SPARE_WORKERS: '0',
        LLM_TIMEOUT: '1000',
        LLM_MAX_RETRIES: '0',
        SERVICE_WRITE_STALL_TIMEOUT: '2000',
        SERVICE_WS_MAX_CONCURRENT_CHATS: '3',
      },
    });
    await svc.waitReady();
    await createBot(svc.port, app, bot('ok'), { domain: 'ok', api: `${llm.url}/v1` });
  });
  after(async () => {
    await svc?.stop();
    await llm?.close();
  });

  describe('JSON nested deeper than the parser allows', () => {
    const shapes = (depth: number): [string, string][] => {
      const out: [string, string][] = [
        ['[[[ unclosed', '['.repeat(depth)],
        ['{"a": unclosed', '{"a":'.repeat(depth)],
      ];
      if (depth > MAX_JSON_DEPTH) {
        out.push(['[[[ ]]] valid', '['.repeat(depth) + ']'.repeat(depth)]);
        out.push(['{"a":{...}} valid', '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)]);
        out.push([
          'inside a valid chat body',
          JSON.stringify({ bot_id: bot('ok'), messages: [{ role: 'user', content: 'x' }] }).replace(
            /}$/,
            `, "extra": ${'['.repeat(depth)}${']'.repeat(depth)}}`,
          ),
        ]);
      }
      return out;
    };
    const targets: [string, string][] = [
      ['POST', CHAT],
      ['POST', CUSTOM],
      ['POST', BOT_CONFIG],
      ['PUT', BOT_CONFIG],
    ];

    it('answers HTTP 200 with the 40002 body and json_invalid at 10, 1000, 5000 and 100000 levels, on every endpoint, with no log line per request', async () => {
      const from = svc.logs.length;
      let sent = 0;
      for (const depth of [10, 1000, 5000, 100_000]) {
        for (const [shape, body] of shapes(depth)) {
          for (const [method, path] of targets) {
            const r = await request(svc.port, path, {
              method,
              body,
              headers: { 'Content-Type': 'application/json', 'x-consumer-username': app },
            });
            sent++;
            const what = `${method} ${path} ${shape} x ${depth}: ${r.status} ${r.body.slice(0, 200)}`;
            expect(r.status, what).to.equal(200);
            const j = JSON.parse(r.body) as Record<string, unknown>;
            expect(j, what).to.deep.include({ code: 40002, choices: [], logs: [] });
            expect(j.message, what).to.match(/^json_invalid, \d+, JSON decode error$/);
          }
        }
      }
      expect(sent).to.be.at.least(60);
      const lines = svc.logs.slice(from);
      expect(lines.length, JSON.stringify(lines).slice(0, 1000)).to.be.at.most(sent);
      expect(JSON.stringify(lines)).not.to.match(/stack|Maximum call stack/);
      expect(lines.filter((l) => l.level === 'error')).to.deep.equal([]);
      expect((await request(svc.port, '/health')).status).to.equal(200);
    });

    it('the same on the WebSocket: a chat message nested too deep is a json_invalid protocol error', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        ws.ws.send(
          `{"type":"chat","request_id":"deep","body":${'['.repeat(5000)}${']'.repeat(5000)}}`,
        );
        const err = await ws.waitFor((f) => f.type === 'error');
        expect(err).to.deep.include({
          code: 40002,
          message: 'json_invalid, message, JSON decode error',
        });
        ws.send({ type: 'ping' });
        await ws.waitFor((f) => f.type === 'pong');
      } finally {
        ws.close();
      }
    });
  });
});
