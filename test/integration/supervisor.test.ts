import { expect } from 'chai';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import {
  freePort,
  isAlive,
  request,
  sleep,
  startService,
  type Service,
} from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };

async function pidsOver(port: number, n: number): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  const batch = 10;
  for (let i = 0; i < n; i += batch) {
    const res = await Promise.all(Array.from({ length: batch }, () => request(port, '/health')));
    for (const r of res) {
      expect(r.status).to.equal(200);
      const pid = (JSON.parse(r.body) as { pid: number }).pid;
      seen.set(pid, (seen.get(pid) ?? 0) + 1);
    }
  }
  return seen;
}

describe('supervisor: pool, crashes, boot failures', function () {
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('N workers serve: distinct worker pids over many requests', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '3' } });
    const ready = await svc.waitReady();
    expect(ready.message).to.equal(`ready: 3/3 workers on 127.0.0.1:${svc.port}`);
    const seen = await pidsOver(svc.port, 300);
    expect([...seen.keys()].sort()).to.deep.equal(svc.readyWorkerPids().sort());
    expect(seen.size).to.equal(3);
  });

  it('kill -9 of a worker: logged with its reason, replaced, serving again', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    const [victim] = svc.readyWorkerPids();
    const mark = svc.logs.length;
    process.kill(victim!, 'SIGKILL');
    const exitLine = await svc.waitForLog(
      (l) =>
        l.worker_pid === victim &&
        /killed by SIGKILL, possibly out of memory/.test(l.message ?? ''),
      5000,
      mark,
    );
    expect(exitLine.level).to.equal('error');
    await svc.waitForLog((l) => l.message === 'worker ready', 5000, mark);
    const pids = svc.readyWorkerPids();
    expect(pids).to.have.length(2);
    expect(pids).not.to.include(victim);
    const seen = await pidsOver(svc.port, 100);
    expect([...seen.keys()]).not.to.include(victim);
    expect(seen.size).to.be.greaterThan(0);
  });

  for (const [policy, forks, error] of [
    ['none', 2, /failed to boot: .*EADDRINUSE/],
    ['leastconn', 0, /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE.*\(exit 3\)/],
  ] as const) {
    it(`port taken (SERVICE_SCHEDULING=${policy}): exit 3, the error logged, no fork storm`, async () => {
      const blocker = net.createServer();
      const port = await freePort();
      await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
      try {
        const started = Date.now();
        svc = await startService({
          env: {
            SERVICE_PORT: String(port),
            SERVICE_WORKERS: '2',
            SERVICE_SCHEDULING: policy,
            LOG_LEVEL: 'debug',
          },
        });
        const res = await svc.exited;
        const took = Date.now() - started;
        expect(res.code, svc.output).to.equal(3);
        expect(took).to.be.lessThan(5000);
        expect(svc.logs.filter((l) => l.message === 'worker forked').length).to.be.at.most(forks);
        expect(svc.output).to.match(error);
      } finally {
        blocker.close();
      }
    });
  }

  it('crash budget: more unstable restarts than the budget stop the primary with exit 4', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_CRASH_BUDGET: '2', SERVICE_RESTART_BACKOFF_BASE: '50' },
    });
    await svc.waitReady();
    for (let i = 0; i < 3; i++) {
      const mark = svc.logs.length;
      const [pid] = svc.readyWorkerPids();
      process.kill(pid!, 'SIGKILL');
      if (i < 2) await svc.waitForLog((l) => l.message === 'worker ready', 10000, mark);
    }
    const res = await svc.exited;
    expect(res.code).to.equal(4);
    expect(svc.output).to.match(/crash budget exceeded: 3 unstable restarts/);
  });

  it('backoff: the first crash is replaced at once, the next ones after a growing delay', async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_CRASH_BUDGET: '10',
        SERVICE_RESTART_BACKOFF_BASE: '400',
      },
    });
    await svc.waitReady();
    const delays: string[] = [];
    for (let i = 0; i < 3; i++) {
      const mark = svc.logs.length;
      const [pid] = svc.readyWorkerPids();
      process.kill(pid!, 'SIGKILL');
      const line = await svc.waitForLog((l) => /replacing it/.test(l.message ?? ''), 5000, mark);
      delays.push(line.message!);
      await svc.waitForLog((l) => l.message === 'worker ready', 10000, mark);
    }
    expect(delays[0]).to.match(/replacing it$/);
    const ms = delays.slice(1).map((d) => Number(/in (\d+) ms/.exec(d)?.[1]));
    expect(ms[0]).to.be.within(200, 400);
    expect(ms[1]).to.be.within(400, 800);
  });

  it('the primary SIGKILLed: the workers exit on their own', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    const pids = svc.readyWorkerPids();
    svc.proc.kill('SIGKILL');
    await svc.exited;
    const deadline = Date.now() + 5000;
    while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
    expect(pids.filter(isAlive)).to.deep.equal([]);
  });
});

describe('supervisor: graceful stop', function () {
  it('SIGTERM during a 2 s request: it completes with 200, new connections are refused, exit 0', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '2', ...HOOKS } });
    try {
      await svc.waitReady();
      const started = Date.now();
      const inflight = request(svc.port, '/__test/sleep?ms=2000');
      await sleep(300);
      svc.proc.kill('SIGTERM');
      await svc.waitForLog((l) => l.message === 'draining' && l.role === 'worker', 3000);
      await sleep(200);
      const refused = await request(svc.port, '/health').then(
        (r) => `answered ${r.status}`,
        (e: NodeJS.ErrnoException) => e.code,
      );
      expect(refused).to.equal('ECONNREFUSED');
      const res = await inflight;
      expect(res.status).to.equal(200);
      expect(Date.now() - started).to.be.at.least(1900);
      expect(res.headers.connection).to.equal('close');
      const exit = await svc.exited;
      expect(exit.code, svc.output).to.equal(0);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('keep-alive: a request on an open connection during the drain is answered with Connection: close', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '1', ...HOOKS } });
    try {
      await svc.waitReady();
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const first = await request(svc.port, '/health', { agent });
      expect(first.headers.connection).to.equal('keep-alive');
      const slow = request(svc.port, '/__test/sleep?ms=1500');
      await sleep(100);
      svc.proc.kill('SIGTERM');
      await sleep(100);
      const during = await request(svc.port, '/health', { agent });
      expect(during.status).to.equal(503);
      expect(during.headers.connection).to.equal('close');
      expect(JSON.parse(during.body).status).to.equal('stopping');
      expect((await slow).status).to.equal(200);
      expect((await svc.exited).code).to.equal(0);
      agent.destroy();
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('graceful timeout: a request longer than SERVICE_GRACEFUL_TIMEOUT is cut, exit non-zero', async () => {
    const svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_GRACEFUL_TIMEOUT: '500', ...HOOKS },
    });
    try {
      await svc.waitReady();
      const slow = request(svc.port, '/__test/sleep?ms=5000').catch((e: Error) => e);
      await sleep(200);
      const t0 = Date.now();
      svc.proc.kill('SIGTERM');
      const exit = await svc.exited;
      expect(Date.now() - t0).to.be.lessThan(3500);
      expect(exit.code).to.not.equal(0);
      expect(await slow).to.be.instanceOf(Error);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('a second signal forces a fast stop', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '1', ...HOOKS } });
    try {
      await svc.waitReady();
      void request(svc.port, '/__test/sleep?ms=10000').catch(() => undefined);
      await sleep(200);
      const t0 = Date.now();
      svc.proc.kill('SIGTERM');
      await sleep(700); // past the 500 ms in which a repeated signal is the same stop
      svc.proc.kill('SIGINT');
      const exit = await svc.exited;
      expect(Date.now() - t0).to.be.lessThan(3000);
      expect(exit.code).to.not.equal(0);
      expect(svc.output).to.contain('second stop signal');
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('a signal repeated within 500 ms (a wrapper forwarding it) is the same graceful stop', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '1', ...HOOKS } });
    try {
      await svc.waitReady();
      const slow = request(svc.port, '/__test/sleep?ms=1500');
      await sleep(200);
      svc.proc.kill('SIGTERM');
      await sleep(20);
      svc.proc.kill('SIGTERM');
      svc.proc.kill('SIGINT');
      const exit = await svc.exited;
      expect((await slow).status).to.equal(200);
      expect(exit.code).to.equal(0);
      expect(svc.output).to.contain('repeated stop signal within 500 ms ignored');
      expect(svc.output).not.to.contain('second stop signal');
    } finally {
      await svc.stop('SIGKILL');
    }
  });
});

function openWs(
  port: number,
  path = '/agent/v1/ws',
  opts: WebSocket.ClientOptions = {},
): Promise<WebSocket> {
  return new Promise((res, rej) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, opts);
    ws.once('open', () => res(ws));
    ws.once('error', rej);
    ws.once('unexpected-response', (_req, r) => rej(new Error(`HTTP ${r.statusCode}`)));
  });
}

function nextMessage(ws: WebSocket): Promise<unknown> {
  return new Promise((res) => ws.once('message', (d) => res(JSON.parse(d.toString()))));
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((res) => ws.once('close', (code) => res(code)));
}

describe('worker: WebSocket', function () {
  let svc: Service;
  before(async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_WS_PING_INTERVAL: '200',
        SERVICE_WS_PING_TIMEOUT: '300',
      },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc.stop('SIGKILL');
  });

  it('ping message answered with pong; bad JSON answered with an error frame', async () => {
    const ws = await openWs(svc.port);
    ws.send(JSON.stringify({ type: 'ping' }));
    expect(await nextMessage(ws)).to.deep.equal({ type: 'pong' });
    ws.send('not json');
    const err = (await nextMessage(ws)) as { type: string; code: number };
    expect(err.type).to.equal('error');
    expect(err.code).to.equal(40002);
    ws.close();
  });

  it('a binary frame closes the socket with 1003', async () => {
    const ws = await openWs(svc.port);
    const code = closed(ws);
    ws.send(Buffer.from([1, 2, 3]));
    expect(await code).to.equal(1003);
  });

  it('other upgrade paths get 404', async () => {
    const err = await openWs(svc.port, '/elsewhere').catch((e: Error) => e);
    expect(String(err)).to.contain('HTTP 404');
  });

  it('heartbeat: pings arrive; a client that never answers is terminated', async () => {
    const good = await openWs(svc.port);
    let pings = 0;
    good.on('ping', () => pings++);
    const mute = await openWs(svc.port, '/agent/v1/ws', { autoPong: false });
    const muteClosed = closed(mute);
    await sleep(1200);
    expect(pings).to.be.at.least(3);
    expect(good.readyState).to.equal(WebSocket.OPEN);
    expect(await muteClosed).to.equal(1006);
    good.close();
  });
});

describe('worker: WebSocket on stop', function () {
  it('clients are closed with 1001 when the service stops', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    try {
      await svc.waitReady();
      const sockets = await Promise.all([openWs(svc.port), openWs(svc.port), openWs(svc.port)]);
      const codes = Promise.all(sockets.map(closed));
      svc.proc.kill('SIGTERM');
      expect(await codes).to.deep.equal([1001, 1001, 1001]);
      expect((await svc.exited).code).to.equal(0);
    } finally {
      await svc.stop('SIGKILL');
    }
  });
});
