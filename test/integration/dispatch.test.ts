// SERVICE_SCHEDULING=leastconn: the primary owns the port and hands connections to
// the worker with the fewest; one that a worker could not take goes to another; the port stays
// open while every worker restarts. Real processes, real sockets, real signals.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Exposition } from '../support/prometheus.js';
import {
  freePort,
  request,
  ROOT,
  sleep,
  startService,
  waitUntil,
  type Service,
} from '../support/service.js';

/** GET /health on a raw socket left open; resolves with the pid that answered. */
function healthOn(socket: net.Socket, timeoutMs = 10000): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('no answer in time')), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString();
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
      if (buf.length < head + 4 + len) return;
      clearTimeout(t);
      socket.off('data', onData);
      resolve((JSON.parse(buf.slice(head + 4, head + 4 + len)) as { pid: number }).pid);
    };
    socket.on('data', onData);
    socket.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    socket.write('GET /health HTTP/1.1\r\nHost: test\r\n\r\n');
  });
}

function connect(port: number): net.Socket {
  return net.connect(port, '127.0.0.1');
}

async function metric(port: number, name: string): Promise<number> {
  const res = await request(port, '/metrics');
  return new Exposition(res.body).value(name) ?? NaN;
}

/** The service with leastconn over `handoff`, 2 workers and no spare unless `env` says otherwise. */
function startLeastconn(handoff: string, env: Record<string, string> = {}): Promise<Service> {
  return startService({
    env: {
      SERVICE_SCHEDULING: 'leastconn',
      SERVICE_HANDOFF: handoff,
      SERVICE_WORKERS: '2',
      SERVICE_SPARE_WORKERS: '0',
      ...env,
    },
  });
}

/** SIGCONT to a process that may be gone by now. */
function resume(pid: number): void {
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // gone
  }
}

for (const handoff of ['native', 'ipc'] as const)
  describe(`connection dispatch (SERVICE_SCHEDULING=leastconn, SERVICE_HANDOFF=${handoff})`, function () {
    let svc: Service | undefined;
    const open: net.Socket[] = [];
    afterEach(async () => {
      for (const s of open.splice(0)) s.destroy();
      await svc?.stop('SIGKILL');
      svc = undefined;
    });

    it('200 keep-alive connections opened one after another: 100/100 over 2 workers', async () => {
      svc = await startService({
        env: { SERVICE_SCHEDULING: 'leastconn', SERVICE_HANDOFF: handoff, SERVICE_WORKERS: '2' },
      });
      await svc.waitReady();
      const byPid = new Map<number, number>();
      for (let i = 0; i < 200; i++) {
        const s = connect(svc.port);
        open.push(s);
        const pid = await healthOn(s);
        byPid.set(pid, (byPid.get(pid) ?? 0) + 1);
      }
      expect(byPid.size).to.equal(2);
      for (const n of byPid.values()) expect(n).to.be.within(95, 105);
      // A worker whose connections close gets the next ones: closing 50 of one worker's tips the
      // balance to it.
      const [first] = [...byPid.keys()];
      let closed = 0;
      for (const s of [...open]) {
        if (closed === 50) break;
        if ((await healthOn(s)) !== first) continue;
        s.destroy();
        open.splice(open.indexOf(s), 1);
        closed++;
      }
      await sleep(200);
      const next = new Map<number, number>();
      for (let i = 0; i < 50; i++) {
        const s = connect(svc.port);
        open.push(s);
        const pid = await healthOn(s);
        next.set(pid, (next.get(pid) ?? 0) + 1);
      }
      expect(next.get(first!) ?? 0).to.be.at.least(45);
    });

    it('a connection handed to a worker that dies before taking it is served by another', async () => {
      svc = await startLeastconn(handoff, { LOG_LEVEL: 'info' });
      await svc.waitReady();
      const [stopped, other] = svc.readyWorkerPids();
      // A stopped worker cannot acknowledge: the connections handed to it stay the primary's.
      process.kill(stopped!, 'SIGSTOP');
      try {
        const answers = Array.from({ length: 6 }, () => {
          const s = connect(svc!.port);
          open.push(s);
          return healthOn(s, 15000);
        });
        await sleep(500);
        process.kill(stopped!, 'SIGKILL');
        const pids = await Promise.all(answers);
        // Every one answered, all by the other worker: those handed to the stopped one were
        // never taken, and went to the other when it died.
        expect(pids).to.deep.equal(pids.map(() => other));
      } finally {
        resume(stopped!);
      }
      expect(await metric(svc.port, 'astron_agent_connections_redispatched_total')).to.be.at.least(
        3,
      );
    });

    it('a stopped worker is handed connections for at most its first 100 ms; they are answered when it resumes', async () => {
      svc = await startLeastconn(handoff);
      await svc.waitReady();
      const [victim, other] = svc.readyWorkerPids();
      process.kill(victim!, 'SIGSTOP');
      try {
        const answers: Promise<number>[] = [];
        for (let i = 0; i < 30; i++) {
          const s = connect(svc.port);
          open.push(s);
          answers.push(healthOn(s, 15000));
          await sleep(20);
        }
        await sleep(500);
        process.kill(victim!, 'SIGCONT');
        const pids = await Promise.all(answers);
        const onVictim = pids.filter((p) => p === victim).length;
        // 30 connections 20 ms apart: the ones of the first 100 ms at most (one in two), then none.
        expect(onVictim).to.be.within(1, 4);
        expect(pids.filter((p) => p === other).length).to.equal(30 - onVictim);
      } finally {
        resume(victim!);
      }
    });

    it('a worker draining on its own (SIGTERM to it) gets no new connection; nothing is refused', async () => {
      svc = await startLeastconn(handoff, { AGENT_TEST_HOOKS: '1' });
      await svc.waitReady();
      const [draining] = svc.readyWorkerPids();
      // A slow request keeps the draining worker alive while new connections arrive.
      const slow: Promise<{ status: number; body: string }>[] = [];
      for (let i = 0; i < 4; i++) slow.push(request(svc.port, '/__test/sleep?ms=3000'));
      await sleep(300);
      process.kill(draining!, 'SIGTERM');
      await sleep(100);
      const seen = new Set<number>();
      for (let i = 0; i < 40; i++) {
        const s = connect(svc.port);
        open.push(s);
        seen.add(await healthOn(s));
      }
      expect(seen.has(draining!)).to.equal(false);
      for (const r of await Promise.all(slow)) expect(r.status).to.equal(200);
    });

    it('a worker that refused a connection because it drains on its own stays out when the pool lists it again', async () => {
      // METRICS_PORT: the primary's own port, so reading the counter is no connection to dispatch.
      const mport = await freePort();
      svc = await startLeastconn(handoff, {
        AGENT_TEST_HOOKS: '1',
        SERVICE_SPARE_WORKERS: '1',
        METRICS_PORT: String(mport),
      });
      await svc.waitReady();
      const redispatched = async () =>
        new Exposition((await request(mport, '/metrics')).body).value(
          'astron_agent_connections_redispatched_total',
        ) ?? NaN;
      // A keep-alive connection to one worker, then a slow request on it: that worker stays
      // alive, draining, with one open connection.
      const s1 = connect(svc.port);
      open.push(s1);
      const draining = await healthOn(s1);
      s1.write('GET /__test/sleep?ms=6000 HTTP/1.1\r\nHost: test\r\n\r\n');
      await sleep(200);
      process.kill(draining, 'SIGTERM');
      await sleep(200);
      // New connections until the dispatcher picks it once: it refuses, the connection goes on.
      let other = 0;
      for (let i = 0; i < 10 && !((await redispatched()) >= 1); i++) {
        const s = connect(svc.port);
        open.push(s);
        other = await healthOn(s);
        expect(other).to.not.equal(draining);
      }
      expect(await redispatched(), 'the draining worker refused one').to.be.at.least(1);
      // The other worker dies: the pool promotes the spare and lists its serving workers again,
      // the draining one among them (it does not know of that drain).
      process.kill(other, 'SIGKILL');
      await waitUntil(
        () => svc!.readyWorkerPids().some((p) => p !== draining && p !== other),
        5000,
        'the spare serving',
      );
      await sleep(200);
      const before = await redispatched();
      for (let i = 0; i < 6; i++) {
        const s = connect(svc.port);
        open.push(s);
        expect(await healthOn(s)).to.not.equal(draining);
      }
      expect(await redispatched(), 'refused again after the pool listed it').to.equal(before);
    });

    it('the port stays open while the only worker restarts: a new connection waits and is answered', async () => {
      svc = await startLeastconn(handoff, { SERVICE_WORKERS: '1', LOG_LEVEL: 'info' });
      await svc.waitReady();
      const [only] = svc.readyWorkerPids();
      process.kill(only!, 'SIGKILL');
      await waitUntil(() => !svc!.readyWorkerPids().includes(only!), 5000, 'the worker gone');
      // No worker serves now: under none/rr this connection would be refused.
      const s = connect(svc.port);
      open.push(s);
      const pid = await healthOn(s, 15000);
      expect(pid).to.not.equal(only);
      expect(svc.readyWorkerPids()).to.include(pid);
    });

    it('an IPv6 address with a zone is listened on, as Node takes it (::1%lo; a link-local address of this host)', async () => {
      // The zone is the scope a link-local address needs; on loopback it is taken and unused.
      const hosts: [listen: string, connect: string][] = [['::1%lo', '::1']];
      for (const [name, addrs] of Object.entries(networkInterfaces()))
        for (const a of addrs ?? [])
          if (a.family === 'IPv6' && a.address.startsWith('fe80:') && hosts.length < 2)
            hosts.push([`${a.address}%${name}`, `${a.address}%${name}`]);
      for (const [host, to] of hosts) {
        svc = await startLeastconn(handoff, { SERVICE_HOST: host, SERVICE_WORKERS: '1' });
        await svc.waitReady();
        const s = net.connect(svc.port, to);
        open.push(s);
        expect(svc.readyWorkerPids()).to.include(await healthOn(s));
        await svc.stop('SIGKILL');
        svc = undefined;
      }
    });

    it('a link-local address with an unknown zone stops the start with a clear error', async () => {
      svc = await startLeastconn(handoff, { SERVICE_HOST: 'fe80::1%nosuchif0' });
      const { code } = await svc.exited;
      expect(code).to.not.equal(0);
      expect(svc.output).to.match(/fe80::1%nosuchif0/);
    });

    it('the handoff in use is the one configured', async () => {
      svc = await startService({
        env: { SERVICE_SCHEDULING: 'leastconn', SERVICE_HANDOFF: handoff, LOG_LEVEL: 'debug' },
      });
      await svc.waitReady();
      const line = await svc.waitForLog(
        (l) => l.message === 'leastconn: the primary hands connections over',
        5000,
      );
      expect(line.handoff).to.equal(handoff);
    });

    it('a client that half-closes after its request still gets the answer', async () => {
      svc = await startService({
        env: { SERVICE_SCHEDULING: 'leastconn', SERVICE_HANDOFF: handoff },
      });
      await svc.waitReady();
      const s = connect(svc.port);
      open.push(s);
      const got = new Promise<string>((resolve, reject) => {
        let buf = '';
        s.on('data', (d: Buffer) => (buf += d.toString()));
        s.once('end', () => resolve(buf));
        s.once('error', reject);
      });
      s.end('GET /health HTTP/1.1\r\nHost: test\r\n\r\n');
      expect(await got).to.match(/^HTTP\/1\.1 200 /);
    });
  });

describe('the native connection handoff: faults of its own', function () {
  let svc: Service | undefined;
  const open: net.Socket[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) s.destroy();
    await svc?.stop('SIGKILL');
    svc = undefined;
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('the primary out of descriptors (RLIMIT_NOFILE): accepts are retried, backed off; every connection is answered', async () => {
    svc = await startLeastconn('native', { SERVICE_WORKERS: '1' });
    await svc.waitReady();
    const primary = svc.proc.pid!;
    // Room for two descriptors beyond what the primary holds now (a new one takes the lowest
    // free number, and must be below the limit).
    const used = new Set(readdirSync(`/proc/${primary}/fd`).map(Number));
    const free: number[] = [];
    for (let fd = 0; free.length < 2; fd++) if (!used.has(fd)) free.push(fd);
    const limit = free[1]! + 1;
    execFileSync('prlimit', [`--pid=${primary}`, `--nofile=${limit}:${limit}`]);
    const answers = Array.from({ length: 40 }, () => {
      const s = connect(svc!.port);
      open.push(s);
      return healthOn(s, 15000);
    });
    const pids = await Promise.all(answers);
    expect(new Set(pids)).to.deep.equal(new Set(svc.readyWorkerPids()));
    const warned = svc.logs.filter((l) => l.message === 'cannot accept new connections; retrying');
    expect(warned.length).to.be.at.least(1);
    expect(warned[0]!.error).to.equal('EMFILE');
    // The primary is alive and still serving new connections.
    const s = connect(svc.port);
    open.push(s);
    await healthOn(s);
  });

  it('a worker out of descriptors (RLIMIT_NOFILE): what it could not take goes to the other worker', async () => {
    svc = await startLeastconn('native');
    await svc.waitReady();
    const [full, other] = svc.readyWorkerPids();
    // Not one more descriptor in that worker: the kernel closes those it cannot install.
    const used = new Set(readdirSync(`/proc/${full}/fd`).map(Number));
    let limit = 0;
    while (used.has(limit)) limit++;
    execFileSync('prlimit', [`--pid=${full}`, `--nofile=${limit}:${limit}`]);
    const pids: number[] = [];
    for (let i = 0; i < 20; i++) {
      const s = connect(svc.port);
      open.push(s);
      pids.push(await healthOn(s, 5000));
    }
    // Every connection answered. A descriptor the worker had open for a moment when its table
    // was read (a file, a journal) frees a slot when closed, so it may take one or two itself;
    // the rest went to the other worker because it said "retry".
    expect(pids.filter((p) => p !== full && p !== other)).to.deep.equal([]);
    expect(pids.filter((p) => p === other).length).to.be.at.least(15);
    expect(await metric(svc.port, 'astron_agent_connections_redispatched_total')).to.be.at.least(1);
    expect(svc.readyWorkerPids()).to.include(full);
  });

  it('the only worker stopped until its channel is full: connections wait in the primary, retried backed off, and are all answered when it resumes', async () => {
    // Not killed as hung while stopped: the heartbeat timeout is longer than the test.
    svc = await startLeastconn('native', { SERVICE_WORKERS: '1', SERVICE_WORKER_TIMEOUT: '60000' });
    await svc.waitReady();
    const [only] = svc.readyWorkerPids();
    const full = () => svc!.logs.filter((l) => /channel takes more now/.test(l.message ?? ''));
    const answers: Promise<number>[] = [];
    const one = async () => {
      const s = connect(svc!.port);
      open.push(s);
      await new Promise((r) => s.once('connect', r));
      answers.push(healthOn(s, 30000));
    };
    process.kill(only!, 'SIGSTOP');
    try {
      // One connection at a time, so that each handoff is a message of its own, until the
      // socket buffer of the channel (which the stopped worker does not read) takes no more.
      for (let i = 0; i < 5000 && full().length === 0; i++) {
        await one();
        await sleep(1);
      }
      expect(full().length, 'the channel filled').to.equal(1);
      // More while it is full, and time for several retries, backed off: one warning only.
      for (let i = 0; i < 20; i++) await one();
      await sleep(1500);
      expect(full().length).to.equal(1);
    } finally {
      resume(only!);
    }
    const pids = await Promise.all(answers);
    expect(new Set(pids)).to.deep.equal(new Set([only]));
    await waitUntil(
      () => svc!.logs.some((l) => l.message === 'a worker takes connections again: none waits'),
      5000,
      'the line saying they went',
    );
  });

  it('not built: SERVICE_HANDOFF=native stops the start (exit 3), auto falls back to IPC and says so', async () => {
    // A copy of the package without build/: the install could not compile native/handoff.c.
    const pkg = mkdtempSync(join(tmpdir(), 'astron-nobuild-'));
    dirs.push(pkg);
    cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'));
    const cli = join(pkg, 'dist', 'bin', 'agent.js');

    svc = await startService({
      cli,
      env: { SERVICE_SCHEDULING: 'leastconn', SERVICE_HANDOFF: 'native' },
    });
    const { code } = await svc.exited;
    expect(code).to.equal(3);
    expect(svc.stdout.join('\n') + svc.stderr.join('\n')).to.match(
      /SERVICE_HANDOFF=native, but the native handoff .*handoff\.node is not built/,
    );
    svc = undefined;

    svc = await startService({
      cli,
      env: { SERVICE_SCHEDULING: 'leastconn', SERVICE_HANDOFF: 'auto', SERVICE_WORKERS: '2' },
    });
    await svc.waitReady();
    expect(
      svc.logs.some((l) =>
        /^leastconn hands connections over node:cluster IPC/.test(String(l.message)),
      ),
    ).to.equal(true);
    const pids = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const s = connect(svc.port);
      open.push(s);
      pids.add(await healthOn(s));
    }
    expect(pids.size).to.equal(2);
  });
});
