// Operating the service like an SRE would: the control socket behind `status`, `reload`,
// `scale` and `stop` (the real CLI against a real primary), the health endpoints for
// orchestrators, and request ids.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { createBot } from '../support/chat.js';
import { startFakeLlm } from '../support/fake-llm.js';
import { keepAliveLoad } from '../support/load.js';
import { mysqlEnv, mysqlFromEnv, scratchDatabase, TcpProxy } from '../support/mysql.js';
import { CLI, request, sleep, startService, type Service } from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI in the service's working directory (where it finds config.env and the socket). */
function cli(svc: Service, args: string[], opts: { uid?: number; gid?: number } = {}) {
  return new Promise<CliResult>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      cwd: svc.cwd,
      env: { PATH: process.env.PATH ?? '', LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...opts,
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Status {
  service: { pid: number; phase: string; workers: number; inflight: number; listen: string };
  workers: {
    slot: number;
    pid: number;
    role: string;
    restarts: number;
    last_exit?: { signal: string | null; reason: string };
  }[];
}

async function status(svc: Service): Promise<Status> {
  const r = await cli(svc, ['status', '--json']);
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as Status;
}

const serving = (st: Status) => st.workers.filter((w) => w.role === 'serving');

describe('control socket: status, reload, scale, stop (real CLI)', function () {
  this.timeout(90_000);
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('status: a table on a terminal-less run without --json, JSON with it; a spare shows as such; 0600 socket', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    await sleep(500); // the spare's boot
    const st = await status(svc);
    expect(st.service.pid).to.equal(svc.proc.pid);
    expect(st.service.phase).to.equal('running');
    expect(st.service.workers).to.equal(2);
    expect(st.service.listen).to.equal(`127.0.0.1:${svc.port}`);
    expect(
      serving(st)
        .map((w) => w.slot)
        .sort(),
    ).to.deep.equal([1, 2]);
    expect(st.workers.filter((w) => w.role === 'spare')).to.have.length(1);
    const table = await cli(svc, ['status']);
    expect(table.code).to.equal(0);
    expect(table.stdout).to.match(/SLOT\s+WORKER\s+PID\s+ROLE/);
    expect(table.stdout).to.match(/\bspare\b/);
    const mode = statSync(join(svc.cwd, 'data', 'astron-agent.sock')).mode & 0o777;
    expect(mode.toString(8)).to.equal('600');
    await svc.stop();
    const after = await cli(svc, ['status']);
    expect(after.code, 'LSB: not running').to.equal(3);
  });

  it("status after a crash shows the slot's restart count and last exit", async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    const before = await status(svc);
    const victim = serving(before)[0]!;
    process.kill(victim.pid, 'SIGKILL');
    const mark = svc.logs.length;
    await svc.waitForLog((l) => l.message === 'worker ready', 5000, mark);
    const st = await status(svc);
    const row = st.workers.find((w) => w.slot === victim.slot && w.role === 'serving')!;
    expect(row.pid).not.to.equal(victim.pid);
    expect(row.restarts).to.equal(1);
    expect(row.last_exit).to.include({ signal: 'SIGKILL', reason: 'crash' });
  });

  it('status during a reload says reloading; a blocking reload prints one line per worker and exits 0', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', LOG_LEVEL: 'debug' } });
    await svc.waitReady();
    const mark = svc.logs.length;
    const reload = cli(svc, ['reload']);
    const forked = await svc.waitForLog(
      (l) => l.message === 'worker forked' && l.purpose === 'reload',
      10000,
      mark,
    );
    process.kill(forked.worker_pid as number, 'SIGSTOP');
    const during = await status(svc);
    expect(during.service.phase).to.equal('reloading');
    expect(during.workers.some((w) => w.role === 'starting')).to.equal(true);
    process.kill(forked.worker_pid as number, 'SIGCONT');
    const r = await reload;
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.match(/replaced by worker/g)).to.have.length(2);
    expect(r.stdout).to.match(/2 worker\(s\) replaced/);
  });

  it('a reload whose new workers cannot boot: the CLI exits 1 with the reason, the old workers keep serving', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', ...HOOKS } });
    await svc.waitReady();
    const before = serving(await status(svc))
      .map((w) => w.pid)
      .sort();
    writeFileSync(join(svc.cwd, 'config.env'), 'AGENT_TEST_BOOT_FAIL=1\n');
    const r = await cli(svc, ['reload']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/reload aborted: a new worker did not become ready/);
    expect(r.stderr).to.match(/AGENT_TEST_BOOT_FAIL/);
    expect(
      serving(await status(svc))
        .map((w) => w.pid)
        .sort(),
    ).to.deep.equal(before);
    const invalid = 'SERVICE_GRACEFUL_TIMEOUT=soon\n';
    writeFileSync(join(svc.cwd, 'config.env'), invalid);
    const r2 = await cli(svc, ['reload']);
    expect(r2.code).to.equal(1);
    expect(r2.stderr).to.match(/reload invalid-config/);
  });

  it('scale 2 -> 4 -> 1 under keep-alive load: 0 failed requests, removed workers drained', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    await svc.waitReady();
    let done = false;
    const load = keepAliveLoad(svc.port, { total: 1000, concurrency: 8, until: () => done });
    await sleep(300);
    const up = await cli(svc, ['scale', '4']);
    expect(up.code, up.stderr).to.equal(0);
    expect(up.stdout).to.match(/2 -> 4 workers/);
    expect(serving(await status(svc))).to.have.length(4);
    await sleep(300);
    const down = await cli(svc, ['scale', '-3']);
    expect(down.code, down.stderr).to.equal(0);
    expect(down.stdout).to.match(/4 -> 1 workers/);
    const st = await status(svc);
    expect(serving(st)).to.have.length(1);
    expect(st.workers.filter((w) => w.role === 'draining')).to.have.length(0);
    done = true;
    const report = await load;
    expect(report.errors.slice(0, 5)).to.deep.equal([]);
    expect(report.failed).to.equal(0);
    const bad = await cli(svc, ['scale', '-1']);
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/from 1 to 256/);
  });

  it('stop blocks until the service has stopped; exit 0 when drained, 1 when a request was cut', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '1', ...HOOKS } });
    await svc.waitReady();
    const slow = request(svc.port, '/__test/sleep?ms=800');
    await sleep(100);
    const r = await cli(svc, ['stop']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/every worker drained/);
    expect((await slow).status).to.equal(200);
    expect((await svc.exited).code).to.equal(0);

    svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_GRACEFUL_TIMEOUT: '600', ...HOOKS },
    });
    await svc.waitReady();
    void request(svc.port, '/__test/sleep?ms=5000').catch(() => undefined);
    await sleep(100);
    const cut = await cli(svc, ['stop']);
    expect(cut.code).to.equal(1);
    expect(cut.stderr).to.match(/exit code 1/);
  });

  it('the socket refuses another user (the CLI run as nobody: exit 4, no fallback signal)', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '1' } });
    await svc.waitReady();
    // Let nobody reach the directory: only the socket's own mode (0600) stands in the way.
    chmodSync(svc.cwd, 0o755);
    chmodSync(join(svc.cwd, 'data'), 0o755);
    const r = await cli(svc, ['status'], { uid: 65534, gid: 65534 });
    expect(r.code).to.equal(4);
    expect(r.stderr).to.match(/EACCES|permission denied/i);
    const reload = await cli(svc, ['reload'], { uid: 65534, gid: 65534 });
    expect(reload.code).to.equal(1);
    expect(svc.count(/rolling reload started/)).to.equal(0);
    expect(svc.alive).to.equal(true);
  });

  it('without a control socket the commands fall back to signals and say so', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '1', SERVICE_CONTROL_SOCKET: '' } });
    await svc.waitReady();
    writeFileSync(join(svc.cwd, 'config.env'), 'SERVICE_CONTROL_SOCKET=\n');
    const r = await cli(svc, ['reload']);
    expect(r.code).to.equal(0);
    expect(r.stderr).to.match(/falling back to signals/);
    await svc.waitForLog((l) => l.message === 'rolling reload done', 15000);
    const st = await cli(svc, ['status']);
    expect(st.code).to.equal(4);
    const stop = await cli(svc, ['stop']);
    expect(stop.code).to.equal(0);
    expect((await svc.exited).code).to.equal(0);
  });
});

describe('health endpoints for orchestrators; requests in flight', function () {
  this.timeout(60_000);
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('/health/live and /health/ready 200; /health/backlog and http_server_active_requests count requests in flight', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', ...HOOKS } });
    await svc.waitReady();
    expect((await request(svc.port, '/health/live')).status).to.equal(200);
    const ready = await request(svc.port, '/health/ready');
    expect(ready.status).to.equal(200);
    expect(JSON.parse(ready.body).status).to.equal('ready');
    const slow = Array.from({ length: 3 }, () => request(svc!.port, '/__test/sleep?ms=2500'));
    await sleep(1300); // past a heartbeat
    const backlog = JSON.parse((await request(svc.port, '/health/backlog')).body) as {
      inflight: number;
      workers: number;
    };
    expect(backlog.inflight).to.be.at.least(3);
    expect(backlog.workers).to.equal(2);
    const metrics = (await request(svc.port, '/metrics')).body;
    const gauge = /^http_server_active_requests (\d+)/m.exec(metrics);
    expect(Number(gauge?.[1])).to.be.at.least(3);
    await Promise.all(slow);
  });

  it('/health/ready answers 503 within 100 ms of SIGTERM while in-flight requests still complete', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '1', ...HOOKS } });
    await svc.waitReady();
    // Probes on connections opened before the stop (a new one would be refused: no listener).
    const agents = Array.from(
      { length: 20 },
      () => new http.Agent({ keepAlive: true, maxSockets: 1 }),
    );
    for (const agent of agents)
      expect((await request(svc.port, '/health/ready', { agent })).status).to.equal(200);
    const slow = request(svc.port, '/__test/sleep?ms=1500');
    await sleep(100);
    const t0 = Date.now();
    svc.proc.kill('SIGTERM');
    let at = -1;
    for (const agent of agents) {
      const r = await request(svc.port, '/health/ready', { agent });
      if (r.status === 503) {
        at = Date.now() - t0;
        expect(JSON.parse(r.body).status).to.equal('stopping');
        break;
      }
      await sleep(5);
    }
    expect(at).to.be.within(0, 100);
    expect((await slow).status).to.equal(200);
    expect((await svc.exited).code).to.equal(0);
    for (const agent of agents) agent.destroy();
  });

  it('/health/ready is 503 naming the store while MySQL does not answer (checked at most once a second)', async function () {
    const target = mysqlFromEnv();
    if (!target) {
      if (process.env.REQUIRE_SERVICES === '1') throw new Error('TEST_MYSQL_URL is not set');
      this.skip();
    }
    const db = await scratchDatabase(target);
    const proxy = await new TcpProxy(target.host, target.port).start();
    try {
      svc = await startService({
        env: { SERVICE_WORKERS: '1', ...mysqlEnv(db.target, { port: proxy.port }) },
      });
      await svc.waitReady();
      expect((await request(svc.port, '/health/ready')).status).to.equal(200);
      await proxy.cut();
      await sleep(1100);
      const down = await request(svc.port, '/health/ready');
      expect(down.status).to.equal(503);
      const body = JSON.parse(down.body) as { status: string; reasons: { store?: string } };
      expect(body.status).to.equal('unavailable');
      expect(body.reasons.store).to.be.a('string');
      expect((await request(svc.port, '/health/live')).status).to.equal(200);
      await proxy.restore();
      await sleep(1100);
      let ok = 0;
      for (let i = 0; i < 30 && ok === 0; i++) {
        if ((await request(svc.port, '/health/ready')).status === 200) ok++;
        else await sleep(200);
      }
      expect(ok).to.equal(1);
    } finally {
      await svc?.stop('SIGKILL');
      await proxy.stop();
      await db.drop();
    }
  });
});

describe('request ids', function () {
  this.timeout(60_000);

  it("X-Request-Id kept or made, echoed, on the request's log lines and forwarded to the LLM; X-Agent-Sid on chat", async () => {
    const llm = await startFakeLlm();
    const svc = await startService({ env: { SERVICE_WORKERS: '1' } });
    try {
      await svc.waitReady();
      const h = await request(svc.port, '/health', { headers: { 'X-Request-Id': 'probe-1' } });
      expect(h.headers['x-request-id']).to.equal('probe-1');
      const made = await request(svc.port, '/nope', {
        headers: { 'X-Request-Id': 'bad id with spaces' },
      });
      expect(made.headers['x-request-id']).to.match(/^[0-9a-f-]{36}$/);
      const long = await request(svc.port, '/health', {
        headers: { 'X-Request-Id': 'x'.repeat(200) },
      });
      expect(long.headers['x-request-id']).to.match(/^[0-9a-f-]{36}$/);

      await createBot(svc.port, 'app_rid', 'bot_rid', { domain: 'http-500', api: `${llm.url}/v1` });
      const r = await request(svc.port, '/agent/v1/chat/completions', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-consumer-username': 'app_rid',
          'X-Request-Id': 'trace-me-42',
        },
        body: JSON.stringify({
          bot_id: 'bot_rid',
          stream: true,
          messages: [{ role: 'user', content: 'hi' }],
        }),
      });
      expect(r.headers['x-request-id']).to.equal('trace-me-42');
      const sid = r.headers['x-agent-sid'];
      expect(sid).to.be.a('string');
      expect(r.body).to.contain(String(sid));
      const upstream = llm.byModel('http-500');
      expect(upstream.length).to.be.at.least(1);
      expect(upstream.every((u) => u.headers['x-request-id'] === 'trace-me-42')).to.equal(true);
      await sleep(200);
      const lines = svc.logs.filter((l) => l.request_id === 'trace-me-42');
      expect(lines.length, 'log lines of the request').to.be.at.least(1);
    } finally {
      await svc.stop('SIGKILL');
      await llm.close();
    }
  });
});
