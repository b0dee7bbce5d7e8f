// The container image, built and run for real (`npm run test:container`, also run by .ci/run):
// the Dockerfile built with podman as users build it, on a base image made here (no registry),
// then run with host networking and checked from the outside: health, users and capabilities,
// the HEALTHCHECK, settings, `docker stop` with the engine's default timeout, a rolling reload
// under load, SQLite on a volume, a read-only root filesystem; and compose.yaml. Podman's
// configuration and storage are the test's own (test/support/podman.ts); the containers are
// removed by name at the end, and the host's links and firewall rules are compared before/after.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { Client, runId } from '../support/bot-config.js';
import { chatSse, createBot, user, type SseResult } from '../support/chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import { keepAliveLoad } from '../support/load.js';
import {
  baseImage,
  buildImage,
  Containers,
  IMAGE,
  imageSizes,
  inspect,
  install,
  logs,
  podman,
  podmanOk,
  portInRange,
  STATE,
  writeConfig,
} from '../support/podman.js';
import { request, ROOT, sleep } from '../support/service.js';

const MB = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

/** What a container run must not leave behind on the host: links, iptables and nft rules. */
function networkState(): string {
  const out = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return r.error ? `${cmd}: not here` : r.stdout;
  };
  const links = out('ip', ['-o', 'link', 'show'])
    .split('\n')
    .map((l) => l.split(':')[1]?.trim() ?? '')
    .filter(Boolean)
    .sort()
    .join(' ');
  // Counters change with traffic; only the rules are compared.
  const iptables = out('iptables-save', [])
    .split('\n')
    .filter((l) => !l.startsWith('#') && !l.startsWith(':'))
    .join('\n');
  const nft = out('nft', ['list', 'ruleset']).replace(/packets \d+ bytes \d+/g, '');
  return `links: ${links}\niptables:\n${iptables}\nnft:\n${nft}`;
}

async function waitHealthy(port: number, name: string, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const r = await request(port, '/health', { timeoutMs: 2000 }).catch(() => undefined);
    if (r?.status === 200) return Date.now() - t0;
    const state = await inspect(name, '{{.State.Status}}').catch(() => '?');
    if (state === 'exited' || Date.now() - t0 > timeoutMs)
      throw new Error(`${name} not healthy (${state}):\n${await logs(name)}`);
    await sleep(100);
  }
}

/** The host pids of every process of a container. */
async function hostPids(name: string): Promise<number[]> {
  const r = await podmanOk(['top', name, 'hpid']);
  return r.stdout
    .split('\n')
    .slice(1)
    .map((l) => Number(l.trim()))
    .filter((n) => n > 0);
}

describe('container image (podman build + run)', function () {
  this.timeout(1_800_000);
  const containers = new Containers();
  const id = runId();
  const app = `app_ct_${id}`;
  let llm: FakeLlm | undefined;
  let api = '';
  let netBefore = '';
  let volume = '';

  before(async function () {
    const why = await install();
    if (why) {
      console.log(`  container test skipped: ${why}`);
      this.skip();
    }
    netBefore = networkState();
    writeConfig();
    const base = await baseImage();
    if (base.stdout.trim()) console.log(`  ${base.stdout.trim().replace(/\n/g, '\n  ')}`);
    const build = await buildImage();
    const steps = (build.stdout.match(/^\[\d+\/\d+\] STEP /gm) ?? []).length;
    const cached = (build.stdout.match(/Using cache/g) ?? []).length;
    const sizes = await imageSizes();
    console.log(
      `  podman build: ${(build.ms / 1000).toFixed(1)} s (${cached} of ${steps} steps from the cache); ` +
        `image ${MB(sizes.image)}, base ${MB(sizes.base)}, layers on top ${MB(sizes.image - sizes.base)}`,
    );
    for (const l of sizes.layers.filter((x) => x.size > 100_000))
      console.log(`    ${MB(l.size).padStart(9)}  ${l.createdBy.slice(0, 100)}`);
    llm = await startFakeLlm(await portInRange());
    api = `${llm.url}/v1`;
    volume = join(STATE, 'volumes', `data-${process.pid}`);
    rmSync(volume, { recursive: true, force: true });
    mkdirSync(volume, { recursive: true });
    chownSync(volume, 1000, 1000);
  });

  after(async () => {
    await containers.removeAll(true);
    await llm?.close();
    if (volume) rmSync(volume, { recursive: true, force: true });
  });

  it('is built in the docker format, with its HEALTHCHECK, non-root, on the local base image', async () => {
    const hc = await podmanOk(['image', 'inspect', '--format', '{{json .HealthCheck}}', IMAGE]);
    expect(hc.stdout).to.contain('"health"');
    expect(
      (await podmanOk(['image', 'inspect', '--format', '{{.User}}', IMAGE])).stdout.trim(),
    ).to.equal('node');
    // The runtime image has no compiler and no npm cache.
    const r = await podman([
      'run',
      '--rm',
      '--network=host',
      '--entrypoint',
      'sh',
      IMAGE,
      '-c',
      'command -v g++ gcc make python3 || true; ls -A /root/.npm /home/node/.npm 2>/dev/null || true',
    ]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('');
  });

  it('answers /health 200; every process is non-root with no capabilities; the HEALTHCHECK passes; the environment beats config.env', async () => {
    const port = await portInRange();
    const name = await containers.start([], { SERVICE_PORT: String(port), SERVICE_WORKERS: '2' });
    const ms = await waitHealthy(port, name);
    console.log(`    healthy ${ms} ms after podman run -d`);
    // The image's config.env says 17870; -e SERVICE_PORT decided.
    const cfg = await podmanOk(['exec', name, 'grep', '^SERVICE_PORT=', 'config.env']);
    expect(cfg.stdout.trim()).to.equal('SERVICE_PORT=17870');
    const pids = await hostPids(name);
    expect(pids.length, 'primary + 2 workers').to.be.at.least(3);
    for (const pid of pids) {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
      expect(field('Uid').split(/\s+/), `pid ${pid} uids`).to.deep.equal([
        '1000',
        '1000',
        '1000',
        '1000',
      ]);
      expect(field('Gid').split(/\s+/)[0], `pid ${pid} gid`).to.equal('1000');
      for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb'])
        expect(field(cap), `pid ${pid} ${cap}`).to.match(/^0+$/);
    }
    const hc = await podman(['healthcheck', 'run', name]);
    expect(hc.code, hc.stdout + hc.stderr).to.equal(0);
    // The default scheduling (leastconn) hands connections over with the module the image built,
    // not the IPC fallback.
    expect(await logs(name)).to.not.contain('leastconn hands connections over node:cluster IPC');
  });

  it('a bad setting exits 2 and names it', async () => {
    const name = containers.name();
    const r = await podman([
      'run',
      '--name',
      name,
      '--network=host',
      // A port of the tests' range, should it ever get as far as listening.
      '-e',
      `SERVICE_PORT=${await portInRange()}`,
      '-e',
      'SERVICE_GRACEFUL_TIMEOUT=soon',
      IMAGE,
    ]);
    expect(r.code, r.stdout + r.stderr).to.equal(2);
    expect(r.stdout + r.stderr).to.contain('SERVICE_GRACEFUL_TIMEOUT');
  });

  it('`podman stop` with the engine default timeout and a stream in flight: the stream completes, exit 0 (never 137)', async () => {
    const port = await portInRange();
    const name = await containers.start([], { SERVICE_PORT: String(port), SERVICE_WORKERS: '2' });
    await waitHealthy(port, name);
    expect(await inspect(name, '{{.Config.StopTimeout}}')).to.equal('10');
    // 30 chunks, 100 ms apart: a 3 s stream.
    await createBot(port, app, `bot_stop_${id}`, { domain: 'paced-30-100', api });
    const seen = llm!.requests.length;
    const chat = chatSse(port, { bot_id: `bot_stop_${id}`, messages: [user('hi')] }, app);
    const t = Date.now();
    while (llm!.requests.length === seen && Date.now() - t < 10_000) await sleep(20);
    await sleep(300);
    const stop = await podman(['stop', name], { timeoutMs: 60_000 });
    const r: SseResult = await chat;
    expect(stop.code, stop.stderr).to.equal(0);
    expect(r.done, r.raw.slice(-300)).to.equal(true);
    expect(r.chunks.filter((c) => c.choices?.[0]?.delta?.content).length).to.be.at.least(30);
    expect(await inspect(name, '{{.State.ExitCode}}')).to.equal('0');
    expect(stop.ms, 'the stop ended before the engine would SIGKILL').to.be.below(10_000);
    const out = await logs(name);
    expect(out).to.match(/stopping: draining workers.*7000|7000.*stopping: draining workers/);
    console.log(`    podman stop took ${stop.ms} ms`);
  });

  it('`podman stop` with a stream longer than the drain: cut at the deadline, the stop ends before 10 s, exit 1 (not 137)', async () => {
    const port = await portInRange();
    const name = await containers.start([], { SERVICE_PORT: String(port), SERVICE_WORKERS: '1' });
    await waitHealthy(port, name);
    await createBot(port, app, `bot_long_${id}`, { domain: 'paced-300-100', api });
    const seen = llm!.requests.length;
    const chat = chatSse(port, { bot_id: `bot_long_${id}`, messages: [user('hi')] }, app).catch(
      (err: unknown) => err,
    );
    const t = Date.now();
    while (llm!.requests.length === seen && Date.now() - t < 10_000) await sleep(20);
    const stop = await podman(['stop', name], { timeoutMs: 60_000 });
    await chat;
    expect(stop.ms).to.be.below(10_000);
    expect(await inspect(name, '{{.State.ExitCode}}')).to.equal('1');
    console.log(`    podman stop took ${stop.ms} ms`);
  });

  it('a rolling reload (podman kill -s HUP) loses no request under keep-alive load', async () => {
    const port = await portInRange();
    const name = await containers.start([], { SERVICE_PORT: String(port), SERVICE_WORKERS: '2' });
    await waitHealthy(port, name);
    let reloaded = false;
    const load = keepAliveLoad(port, { total: 3000, concurrency: 16, until: () => reloaded });
    await sleep(500);
    const sent = Date.now();
    await podmanOk(['kill', '-s', 'HUP', name]);
    while (!(await logs(name)).includes('rolling reload done')) {
      if (Date.now() - sent > 60_000) throw new Error(`no reload:\n${await logs(name)}`);
      await sleep(200);
    }
    // A second more of load on the new workers only.
    await sleep(1000);
    reloaded = true;
    const report = await load;
    expect(report.failed, report.errors.slice(0, 5).join('\n')).to.equal(0);
    const firstSeen = new Map<number, number>();
    for (const [at, pid] of report.answers) if (!firstSeen.has(pid)) firstSeen.set(pid, at);
    const fresh = [...firstSeen.values()].filter((at) => at > sent).length;
    // Right after a reload the kernel hands most connections to one worker: at least one new one.
    expect(fresh, 'new workers answered').to.be.at.least(1);
    console.log(
      `    ${report.ok} requests, 0 failed, ${report.pids.size} worker pids (${fresh} new after the HUP)`,
    );
  });

  it('keeps its SQLite data on a mounted volume across a restart, and runs with a read-only root filesystem', async () => {
    const port = await portInRange();
    const vol = ['-v', `${volume}:/app/data`];
    const first = await containers.start(vol, { SERVICE_PORT: String(port) });
    await waitHealthy(port, first);
    const client = new Client(port);
    await createBot(port, app, `bot_vol_${id}`, { domain: 'ok', api });
    await podmanOk(['stop', first]);
    expect(await inspect(first, '{{.State.ExitCode}}')).to.equal('0');
    expect(existsSync(join(volume, 'agent.db'))).to.equal(true);
    // A new container, as `docker run --read-only`: no tmpfs anywhere (podman adds some by default).
    const second = await containers.start(['--read-only', '--read-only-tmpfs=false', ...vol], {
      SERVICE_PORT: String(port),
      SERVICE_WORKERS: '2',
    });
    await waitHealthy(port, second);
    const got = await client.get(app, `bot_vol_${id}`);
    expect(got.body.code, got.raw).to.equal(0);
    await createBot(port, app, `bot_ro_${id}`, { domain: 'ok', api });
    const touch = await podman(['exec', second, 'touch', '/app/x']);
    expect(touch.code, 'the root filesystem is read-only').to.not.equal(0);
    await podmanOk(['stop', second]);
    expect(await inspect(second, '{{.State.ExitCode}}')).to.equal('0');
    const out = await logs(second);
    expect(out).to.not.match(
      /cannot write the pid file|control socket not started|cannot open the control socket/,
    );
  });

  it('compose.yaml: the service, MariaDB and Redis, consistent with the image', () => {
    const text = readFileSync(join(ROOT, 'compose.yaml'), 'utf8');
    const doc = parse(text) as {
      services: Record<string, Record<string, unknown>>;
      volumes?: Record<string, unknown>;
    };
    const { agent, mariadb, redis } = doc.services;
    expect(Object.keys(doc.services)).to.have.members(['agent', 'mariadb', 'redis']);
    expect((agent!.build as { context: string }).context).to.equal('.');
    const env = agent!.environment as Record<string, string>;
    expect(env.MYSQL_HOST).to.equal('mariadb');
    expect(env.REDIS_ADDR).to.equal('redis:6379');
    const mdb = mariadb!.environment as Record<string, string>;
    expect(env.MYSQL_DB).to.equal(mdb.MARIADB_DATABASE);
    expect(env.MYSQL_USER).to.equal(mdb.MARIADB_USER);
    expect(env.MYSQL_PASSWORD).to.equal(mdb.MARIADB_PASSWORD);
    const dep = agent!.depends_on as Record<string, { condition: string }>;
    expect(dep.mariadb!.condition).to.equal('service_healthy');
    expect(dep.redis!.condition).to.equal('service_healthy');
    expect(mariadb!.healthcheck).to.be.an('object');
    expect(redis!.healthcheck).to.be.an('object');
    // The drain fits the stop grace period (the primary kills 2 s after the graceful timeout).
    const grace = Number(/^(\d+)s$/.exec(String(agent!.stop_grace_period))?.[1]);
    const graceful = Number(env.SERVICE_GRACEFUL_TIMEOUT ?? 7000);
    expect(graceful + 2000, 'drain + kill grace within stop_grace_period').to.be.below(
      grace * 1000,
    );
    expect(agent!.volumes).to.deep.include('agent-data:/app/data');
    expect(doc.volumes).to.have.keys(['agent-data', 'mariadb-data']);
    // Not run here: no registry for the mariadb and redis images, and Debian's podman-compose
    // (1.0.3) has no `config` command and ignores depends_on conditions.
  });

  it('removes its containers and leaves no network or firewall change behind', async () => {
    await containers.removeAll();
    const left = await podmanOk(['ps', '-a', '--format', '{{.Names}}']);
    expect(
      left.stdout.split('\n').filter((n) => n.startsWith(`astron-ct-${process.pid}-`)),
    ).to.deep.equal([]);
    expect(networkState()).to.equal(netBefore);
  });
});
