// Hostile and slow clients never hurt the service (issue 13): bodies nested thousands of levels
// deep, SSE and WebSocket readers that stop reading, a WebSocket asking for more chats at once
// than it may run. The real CLI (one worker, embedded SQLite) and the fake LLM, on loopback.
import { expect } from 'chai';
import net from 'node:net';
import { runId } from '../support/bot-config.js';
import { CHAT, createBot, WsChatClient } from '../support/chat.js';
import { CUSTOM } from '../support/custom-chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import { request, sleep, startService, waitUntil, type Service } from '../support/service.js';

const BOT_CONFIG = '/agent/v1/bot-config';
const MAX_JSON_DEPTH = 200;
/** SERVICE_WRITE_STALL_TIMEOUT of the service under test; LLM_TIMEOUT is 1000. */
const STALL_MS = 4000;
/** The big-<N>-<KB> upstream: far more than any socket buffers, as fast as it is read. */
const BIG = 'big-2000-16';
/** A healthy upstream's answer, more than the socket buffers hold, small enough to read whole: 12.5 MiB. */
const MEDIUM = 'big-800-16';

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
        SERVICE_WRITE_STALL_TIMEOUT: String(STALL_MS),
        SERVICE_WS_MAX_CONCURRENT_CHATS: '3',
      },
    });
    await svc.waitReady();
    for (const m of ['ok', 'long', BIG, MEDIUM])
      await createBot(svc.port, app, bot(m), { domain: m, api: `${llm.url}/v1` });
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

  /** A raw HTTP/1.1 chat request on its own socket (the test decides when it reads). */
  const rawChat = (path: string, body: unknown) => {
    const text = JSON.stringify(body);
    const socket = net.connect(svc.port, '127.0.0.1');
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `x-consumer-username: ${app}\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
        `Connection: close\r\n\r\n${text}`,
    );
    return socket;
  };
  const metrics = async () => (await request(svc.port, '/metrics')).body;
  const series = (m: string, re: RegExp) =>
    m
      .split('\n')
      .filter((l) => re.test(l))
      .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  const closedStreams = (m: string) =>
    series(m, new RegExp(`^server_request_total\\{app_id="${app}",.*ret="client_closed"\\}`));

  describe('an SSE reader that stops reading', () => {
    const body = { bot_id: bot(BIG), stream: true, messages: [{ role: 'user', content: 'x' }] };
    it('cut after SERVICE_WRITE_STALL_TIMEOUT, upstream request aborted, chat_streams_open back to 0, recorded as client_closed (499)', async () => {
      const before = await metrics();
      const from = svc.logs.length;
      const nth = llm.byModel(BIG).length;
      const socket = rawChat(CHAT, body);
      socket.pause(); // never reads: its receive window fills
      const closedBySocket = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
      socket.on('error', () => {});
      try {
        await waitUntil(() => llm.byModel(BIG).length > nth, 5000, 'the upstream request');
        const upstream = llm.byModel(BIG)[nth]!;
        const t0 = Date.now();
        expect((await metrics()).match(/^chat_streams_open 1$/m), 'one stream open').to.not.equal(
          null,
        );
        await Promise.race([upstream.closed, sleep(STALL_MS + 6000)]);
        const took = Date.now() - t0;
        expect(upstream.closedEarly, 'the upstream saw its request closed').to.equal(true);
        expect(took).to.be.within(STALL_MS - 500, STALL_MS + 5000);
        await waitUntil(() => svc.count(/stopped reading/, from) > 0, 3000, 'the stall log line');
        let m = '';
        for (let i = 0; i < 50 && !/^chat_streams_open 0$/m.test(m); i++) {
          m = await metrics();
          if (!/^chat_streams_open 0$/m.test(m)) await sleep(100);
        }
        expect(m.match(/^chat_streams_open \d+$/m)?.[0]).to.equal('chat_streams_open 0');
        expect(closedStreams(m) - closedStreams(before), 'ret="client_closed"').to.equal(1);
        const cut499 = (x: string) =>
          series(
            x,
            /^http_requests_total\{method="POST",route="\/agent\/v1\/chat\/completions\/?",status="499"\}/,
          );
        expect(cut499(m) - cut499(before), 'HTTP status 499').to.equal(1);
        const lines = svc.logs.slice(from);
        expect(lines.filter((l) => l.level === 'error')).to.deep.equal([]);
        expect(svc.count(/stopped reading/, from)).to.equal(1);
      } finally {
        socket.destroy();
        await closedBySocket;
      }
    });

    it('a slow reader (pauses longer than LLM_TIMEOUT, shorter than the stall time) of a healthy upstream gets the whole stream with code 0, never -1', async () => {
      const socket = rawChat(CHAT, {
        bot_id: bot(MEDIUM),
        stream: true,
        messages: [{ role: 'user', content: 'x' }],
      });
      socket.pause();
      const parts: Buffer[] = [];
      let got = 0;
      socket.on('data', (d: Buffer) => {
        parts.push(d);
        got += d.length;
        // one more pause of twice LLM_TIMEOUT once 1 MiB has arrived
        if (got >= 1 << 20 && got - d.length < 1 << 20) {
          socket.pause();
          setTimeout(() => socket.resume(), 2000);
        }
      });
      const ended = new Promise<void>((r) => socket.once('end', r));
      await sleep(2000); // twice LLM_TIMEOUT before reading a byte
      socket.resume();
      await ended;
      const text = Buffer.concat(parts).toString();
      const events = text
        .split('\n\n')
        .filter((e) => e.includes('data: '))
        .map((e) => e.slice(e.indexOf('data: ') + 6));
      expect(events[events.length - 1]).to.equal('[DONE]');
      const chunks = events.slice(0, -1).map(
        (e) =>
          JSON.parse(e) as {
            code: number;
            message: string;
            choices: { delta: { content: string | null } }[];
          },
      );
      const stop = chunks[chunks.length - 1]!;
      expect(stop.code, stop.message).to.equal(0);
      expect(chunks.filter((c) => c.choices[0]!.delta.content?.startsWith('b'))).to.have.length(
        800,
      );
    });
  });

  describe('a WebSocket reader that stops reading, and the per-socket chat bound', () => {
    it('a WebSocket that stops reading is terminated after the stall time: its chats and upstream requests are aborted, chat_streams_open back to 0', async () => {
      const from = svc.logs.length;
      const before = await metrics();
      const nth = llm.byModel(BIG).length;
      const ws = await WsChatClient.open(svc.port, { appId: app });
      const closed = new Promise<void>((r) => ws.ws.once('close', () => r()));
      ws.ws.on('error', () => {});
      ws.chat('big', { bot_id: bot(BIG), messages: [{ role: 'user', content: 'x' }] });
      ws.ws.pause(); // reads nothing more
      await waitUntil(() => llm.byModel(BIG).length > nth, 5000, 'the upstream request');
      const upstream = llm.byModel(BIG)[nth]!;
      const t0 = Date.now();
      await Promise.race([upstream.closed, sleep(STALL_MS + 6000)]);
      expect(upstream.closedEarly, 'the upstream saw its request closed').to.equal(true);
      expect(Date.now() - t0).to.be.within(STALL_MS - 500, STALL_MS + 5000);
      ws.ws.resume();
      await Promise.race([closed, sleep(3000)]);
      expect(ws.ws.readyState).to.equal(ws.ws.CLOSED);
      let m = await metrics();
      for (let i = 0; i < 50 && !/^chat_streams_open 0$/m.test(m); i++) {
        await sleep(100);
        m = await metrics();
      }
      expect(m.match(/^chat_streams_open \d+$/m)?.[0]).to.equal('chat_streams_open 0');
      expect(closedStreams(m) - closedStreams(before), 'ret="client_closed"').to.equal(1);
      expect(svc.count(/websocket client stopped reading/, from)).to.be.at.least(1);
      expect(svc.logs.slice(from).filter((l) => l.level === 'error')).to.deep.equal([]);
    });

    it('a slow WebSocket reader (a pause longer than LLM_TIMEOUT, shorter than the stall time) of a healthy upstream gets the whole stream with code 0', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        ws.chat('m', { bot_id: bot(MEDIUM), messages: [{ role: 'user', content: 'x' }] });
        ws.ws.pause();
        await sleep(2000);
        ws.ws.resume();
        const { chunks } = await ws.result('m');
        const stop = chunks[chunks.length - 1]!;
        expect(stop.code, stop.message).to.equal(0);
        expect(chunks.filter((c) => c.choices[0]!.delta.content?.startsWith('b'))).to.have.length(
          800,
        );
      } finally {
        ws.close();
      }
    });

    it('SERVICE_WS_MAX_CONCURRENT_CHATS (3 here) chats at once; one more is a 40002 protocol error frame, the others carry on', async () => {
      const ws = await WsChatClient.open(svc.port, { appId: app });
      try {
        for (const r of ['l1', 'l2', 'l3'])
          ws.chat(r, { bot_id: bot('long'), messages: [{ role: 'user', content: 'x' }] });
        for (const r of ['l1', 'l2', 'l3'])
          await ws.waitFor((f) => f.request_id === r && f.chunk !== undefined);
        ws.chat('l4', { bot_id: bot('ok'), messages: [{ role: 'user', content: 'x' }] });
        const err = await ws.waitFor((f) => f.type === 'error' && f.request_id === 'l4');
        expect(err).to.deep.equal({
          type: 'error',
          request_id: 'l4',
          code: 40002,
          message: 'value_error, request_id, at most 3 chats may run at once on one connection',
        });
        ws.send({ type: 'cancel', request_id: 'l1' });
        await ws.waitFor((f) => f.request_id === 'l1' && f.done === true);
        // a slot is free again
        ws.chat('l5', { bot_id: bot('ok'), messages: [{ role: 'user', content: 'x' }] });
        const r5 = await ws.result('l5');
        expect(r5.chunks[r5.chunks.length - 1]!.code).to.equal(0);
        ws.send({ type: 'ping' });
        await ws.waitFor((f) => f.type === 'pong');
      } finally {
        ws.close();
      }
    });
  });
});
