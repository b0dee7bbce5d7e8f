import { expect } from 'chai';
import { utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { keepAliveLoad } from '../support/load.js';
import {
  CLI,
  freePort,
  request,
  runCli,
  sleep,
  startService,
  type Service,
} from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };
const isReady = (m?: string) => m === 'worker ready';

async function reloadUnderLoad(workers: number) {
  const svc = await startService({ env: { SERVICE_WORKERS: String(workers), LOG_LEVEL: 'info' } });
  try {
    await svc.waitReady();
    const before = new Set(svc.readyWorkerPids());
    let hupAt = 0;
    let doneAt = 0;
    const loadDone = keepAliveLoad(svc.port, {
      total: 2400,
      concurrency: 8,
      until: () => doneAt > 0 && Date.now() > doneAt + 800,
      onProgress: (n) => {
        if (n === 600 && !hupAt) {
          hupAt = Date.now();
          svc.proc.kill('SIGHUP');
        }
      },
    });
    const done = await svc.waitForLog((l) => l.message === 'rolling reload done', 30000);
    doneAt = Date.parse(String(done.timestamp));
    const report = await loadDone;
    expect(report.errors.slice(0, 5), `failures: ${report.failed}`).to.deep.equal([]);
    expect(report.failed).to.equal(0);
    expect(report.ok).to.be.at.least(2400);
    // The last old worker starts its drain at "done": a request that arrives on one of its
    // keep-alive connections within the drain's idle grace (300 ms) is still its to answer.
    const after = new Set(report.answers.filter(([t]) => t > doneAt + 350).map(([, pid]) => pid));
    expect(after.size, 'answers after the reload').to.be.greaterThan(0);
    for (const pid of after) expect(before.has(pid), `pid ${pid} is an old worker`).to.equal(false);
    const now = new Set(svc.readyWorkerPids());
    expect(now.size).to.equal(workers);
    for (const pid of before) expect(now.has(pid)).to.equal(false);
    expect((await svc.stop()).code).to.equal(0);
  } finally {
    await svc.stop('SIGKILL');
  }
}

describe('rolling reload', function () {
  it('SIGHUP under keep-alive load (2 workers): 0 failures, every worker pid changed', () =>
    reloadUnderLoad(2));
  it('SIGHUP under keep-alive load (1 worker): 0 failures, the worker pid changed', () =>
    reloadUnderLoad(1));

  it('new workers that cannot boot: reload aborted and logged, old workers keep serving, 0 failures', async () => {
    const svc = await startService({
      env: { SERVICE_WORKERS: '2', ...HOOKS },
      configText: 'SERVICE_NAME=a\n',
    });
    try {
      await svc.waitReady();
      const before = svc.readyWorkerPids().sort();
      writeFileSync(join(svc.cwd, 'config.env'), 'SERVICE_NAME=b\nAGENT_TEST_BOOT_FAIL=1\n');
      const loadDone = keepAliveLoad(svc.port, { total: 1500, concurrency: 6 });
      await sleep(100);
      svc.proc.kill('SIGHUP');
      const aborted = await svc.waitForLog((l) => /^reload aborted/.test(l.message ?? ''), 15000);
      expect(aborted.error).to.match(/AGENT_TEST_BOOT_FAIL/);
      const report = await loadDone;
      expect(report.failed).to.equal(0);
      expect(svc.readyWorkerPids().sort()).to.deep.equal(before);
      // Only old workers answered (with SERVICE_SCHEDULING=none the kernel may favour one).
      for (const pid of report.pids.keys()) expect(before).to.include(pid);
      expect(svc.proc.exitCode).to.equal(null);
      // Fix the file: the next reload goes through.
      writeFileSync(join(svc.cwd, 'config.env'), 'SERVICE_NAME=c\n');
      const mark = svc.logs.length;
      svc.proc.kill('SIGHUP');
      await svc.waitForLog((l) => l.message === 'rolling reload done', 20000, mark);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('an invalid config.env aborts the reload with the start-time messages; old workers untouched', async () => {
    const svc = await startService({
      env: { SERVICE_WORKERS: '1' },
      configText: 'SERVICE_NAME=a\n',
    });
    try {
      await svc.waitReady();
      const before = svc.readyWorkerPids();
      writeFileSync(
        join(svc.cwd, 'config.env'),
        'SERVICE_GRACEFUL_TIMEOUT=soon\nREDIS_PASSWORD=hunter2-secret\n',
      );
      svc.proc.kill('SIGHUP');
      await svc.waitForLog(
        (l) => /^reload aborted: invalid configuration/.test(l.message ?? ''),
        10000,
      );
      expect(svc.output).to.match(/invalid setting SERVICE_GRACEFUL_TIMEOUT: expected an integer/);
      expect(svc.output).not.to.contain('hunter2-secret');
      expect(svc.readyWorkerPids()).to.deep.equal(before);
      expect((await request(svc.port, '/health')).status).to.equal(200);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('new settings reach the new workers; a changed port is reported, not applied', async () => {
    const port = await freePort();
    const svc = await startService({
      env: { SERVICE_PORT: '', SERVICE_WORKERS: '' },
      configText: `SERVICE_NAME=one\nSERVICE_PORT=${port}\nSERVICE_WORKERS=1\n`,
    });
    try {
      await svc.waitReady();
      writeFileSync(
        join(svc.cwd, 'config.env'),
        `SERVICE_NAME=two\nSERVICE_PORT=${port + 1}\nSERVICE_WORKERS=2\n`,
      );
      svc.proc.kill('SIGHUP');
      await svc.waitForLog((l) => l.message === 'rolling reload done', 20000);
      expect(svc.output).to.match(/SERVICE_PORT changed .*cannot change on a reload/);
      expect(svc.readyWorkerPids()).to.have.length(2);
      const health = await request(port, '/health');
      expect(health.status).to.equal(200);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('a SIGHUP during a reload queues exactly one more', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '2' } });
    try {
      await svc.waitReady();
      svc.proc.kill('SIGHUP');
      await svc.waitForLog((l) => l.message === 'rolling reload started', 5000);
      for (let i = 0; i < 4; i++) {
        svc.proc.kill('SIGHUP');
        await sleep(20);
      }
      await svc.waitForLog((l) => l.message === 'rolling reload done', 30000);
      await sleep(300);
      const second = svc.logs.filter((l) => l.message === 'rolling reload started').length;
      if (second < 2)
        await svc.waitForLog(
          (l) => l.message === 'rolling reload started',
          5000,
          svc.logs.findIndex((l) => l.message === 'rolling reload done') + 1,
        );
      await svc.waitForLog(
        (l) => l.message === 'rolling reload done',
        30000,
        svc.logs.findIndex((l) => l.message === 'rolling reload done') + 1,
      );
      await sleep(1500);
      expect(svc.logs.filter((l) => l.message === 'rolling reload started')).to.have.length(2);
    } finally {
      await svc.stop('SIGKILL');
    }
  });

  it('`astron-agent reload` and `stop` reach the running primary (and wait for the outcome)', async () => {
    const svc = await startService({ env: { SERVICE_WORKERS: '1' } });
    try {
      await svc.waitReady();
      const r = await runCli({ args: ['reload'], cwd: svc.cwd });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/replaced by worker/);
      expect(svc.logs.some((l) => l.message === 'rolling reload done')).to.equal(true);
      const stop = await runCli({ args: ['stop'], cwd: svc.cwd });
      expect(stop.code).to.equal(0);
      expect((await svc.exited).code).to.equal(0);
      const none = await runCli({ args: ['reload'], cwd: svc.cwd });
      expect(none.code).to.equal(1);
      expect(none.stderr).to.contain('no running astron-agent');
    } finally {
      await svc.stop('SIGKILL');
    }
  });
});

describe('hot reload (SERVICE_RELOAD=true)', function () {
  it('10 quick touches of watched files give exactly one rolling reload', async () => {
    const svc = await startService({
      env: { SERVICE_WORKERS: '1', SERVICE_RELOAD: 'true' },
      configText: 'SERVICE_NAME=w\n',
    });
    try {
      await svc.waitReady();
      await svc.waitForLog((l) => /^watching for changes/.test(l.message ?? ''), 10000);
      const cfg = join(svc.cwd, 'config.env');
      for (let i = 0; i < 10; i++) {
        const t = new Date();
        if (i % 2 === 0) writeFileSync(cfg, `SERVICE_NAME=w${i}\n`);
        else utimesSync(CLI, t, t); // a file of the compiled code the workers run
        await sleep(15);
      }
      await svc.waitForLog((l) => l.message === 'rolling reload done', 20000);
      // ignored: dotfiles, logs and node_modules never trigger a reload
      writeFileSync(join(svc.cwd, '.hidden'), 'x');
      writeFileSync(join(svc.cwd, 'service.log'), 'x');
      await sleep(1500);
      expect(svc.logs.filter((l) => l.message === 'rolling reload started')).to.have.length(1);
      expect(svc.logs.filter((l) => /^files changed/.test(l.message ?? ''))).to.have.length(1);
    } finally {
      await svc.stop('SIGKILL');
    }
  });
});

describe('scaling and hung workers', function () {
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('SIGTTIN adds a worker, SIGTTOU drains one, never below 1', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '1' } });
    await svc.waitReady();
    svc.proc.kill('SIGTTIN');
    await svc.waitForLog((l) => isReady(l.message), 10000, svc.logs.length);
    await sleep(100);
    expect(svc.readyWorkerPids()).to.have.length(2);
    const mark = svc.logs.length;
    svc.proc.kill('SIGTTOU');
    await svc.waitForLog((l) => /\(scale\)$/.test(l.message ?? ''), 10000, mark);
    expect(svc.readyWorkerPids()).to.have.length(1);
    svc.proc.kill('SIGTTOU');
    await svc.waitForLog((l) => /scale down refused/.test(l.message ?? ''), 5000, mark);
    expect(svc.readyWorkerPids()).to.have.length(1);
    expect((await request(svc.port, '/health')).status).to.equal(200);
  });

  it('a worker whose event loop is blocked is replaced within SERVICE_WORKER_TIMEOUT + 1 s', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_WORKER_TIMEOUT: '1500', ...HOOKS },
    });
    await svc.waitReady();
    const mark = svc.logs.length;
    const blocked = request(svc.port, '/__test/block?ms=20000').catch(() => undefined);
    const t0 = Date.now();
    const hung = await svc.waitForLog((l) => /^worker hung/.test(l.message ?? ''), 10000, mark);
    await svc.waitForLog((l) => isReady(l.message), 10000, mark);
    const took = Date.now() - t0;
    expect(took).to.be.lessThan(1500 + 1000 + 300);
    const exit = await svc.waitForLog(
      (l) => l.worker_pid === hung.worker_pid && /\(hung\)$/.test(l.message ?? ''),
      10000,
      mark,
    );
    expect(exit.message).to.match(/killed by SIG(TERM|KILL)/);
    expect(svc.readyWorkerPids()).to.have.length(2);
    expect((await request(svc.port, '/health')).status).to.equal(200);
    void blocked;
  });

  it('SERVICE_MAX_REQUESTS recycles workers without losing a request', async () => {
    svc = await startService({ env: { SERVICE_WORKERS: '2', SERVICE_MAX_REQUESTS: '300' } });
    await svc.waitReady();
    const retiredByRecycle = () =>
      svc!.logs.filter((l) => /\(recycle\)$/.test(l.message ?? '')).length;
    const report = await keepAliveLoad(svc.port, {
      total: 2500,
      concurrency: 8,
      until: () => retiredByRecycle() >= 2,
    });
    expect(report.failed, report.errors.slice(0, 5).join(', ')).to.equal(0);
    expect(retiredByRecycle()).to.be.at.least(2);
    const recycled = svc.logs.filter((l) => l.message === 'recycling worker');
    expect(recycled.length).to.be.at.least(2);
    expect(recycled.every((l) => l.reason === 'requests')).to.equal(true);
    expect(report.pids.size).to.be.at.least(3);
  });

  it('SERVICE_MAX_MEMORY_MB recycles a worker whose RSS grew past it, without losing a request', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_MAX_MEMORY_MB: '200', ...HOOKS },
    });
    await svc.waitReady();
    const mark = svc.logs.length;
    const grown = JSON.parse((await request(svc.port, '/__test/alloc?mb=250')).body) as {
      pid: number;
    };
    const loadDone = keepAliveLoad(svc.port, {
      total: 1000,
      concurrency: 6,
      until: () =>
        svc!.logs.some((l) => l.worker_pid === grown.pid && /\(recycle\)$/.test(l.message ?? '')),
    });
    const line = await svc.waitForLog((l) => l.message === 'recycling worker', 10000, mark);
    expect(line.reason).to.equal('memory');
    expect(line.worker_pid).to.equal(grown.pid);
    const report = await loadDone;
    expect(report.failed, report.errors.slice(0, 5).join(', ')).to.equal(0);
    // The load stops when the old worker has exited, or after 10x its total: on a slow machine
    // the drain can outlast it, so wait for the exit before looking at the pool.
    await svc.waitForLog(
      (l) => l.worker_pid === grown.pid && /\(recycle\)$/.test(l.message ?? ''),
      20000,
      mark,
    );
    expect(svc.readyWorkerPids()).to.have.length(2);
    expect(svc.readyWorkerPids()).not.to.include(grown.pid);
  });
});
