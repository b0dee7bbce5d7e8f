// Deployment surfaces: the Dockerfile's own entrypoint and healthcheck commands run as the
// image would run them (no Docker engine here), and the systemd notify protocol.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { drainDeadlines, KILL_GRACE_MS } from '../../lib/ipc.js';
import { freePort, ROOT, sleep, startService, tempDir } from '../support/service.js';

interface Image {
  workdir: string;
  entrypoint: string[];
  cmd: string[];
  healthcheck: string[];
  copies: [string, string][];
  user: string;
  expose: string;
}

/** Reads the runtime stage of the Dockerfile: the instructions after the last FROM. */
function readDockerfile(): Image {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stages = text.split(/^FROM /m);
  const runtime = stages[stages.length - 1]!;
  const line = (instr: string) =>
    new RegExp(`^${instr}\\s+(.*)$`, 'm').exec(runtime)?.[1]?.trim() ?? '';
  const json = (s: string) => JSON.parse(s) as string[];
  const hc = /CMD\s+(\[.*\])/.exec(line('HEALTHCHECK'))?.[1];
  const copies = [...runtime.matchAll(/^COPY\s+(?!--from)(\S+)\s+(\S+)$/gm)].map(
    (m) => [m[1]!, m[2]!] as [string, string],
  );
  return {
    workdir: line('WORKDIR'),
    entrypoint: json(line('ENTRYPOINT')),
    cmd: json(line('CMD')),
    healthcheck: hc ? json(hc) : [],
    copies,
    user: line('USER'),
    expose: line('EXPOSE'),
  };
}

function run(cmd: string[], cwd: string, env: Record<string, string>): ChildProcess {
  return spawn(cmd[0] === 'node' ? process.execPath : cmd[0]!, cmd.slice(1), {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

describe('container image (Dockerfile)', function () {
  it('is multi-stage, non-root, exec-form, with EXPOSE 17870 and a CLI healthcheck', () => {
    const img = readDockerfile();
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(text.match(/^FROM /gm)?.length).to.be.at.least(2);
    // The runtime stage is the last one, on the Node image itself (no compiler in it).
    expect(text.split(/^FROM /m).pop()).to.match(/^node:20-bookworm-slim AS runtime$/m);
    expect(img.user).to.equal('node');
    expect(img.expose).to.equal('17870');
    expect(img.entrypoint).to.deep.equal(['node', 'dist/bin/agent.js']);
    expect(img.healthcheck.slice(-1)).to.deep.equal(['health']);
    expect(img.copies).to.deep.include(['config.env.example', './config.env']);
    expect(existsSync(join(ROOT, '.dockerignore'))).to.equal(true);
  });

  it("the image's default drain ends before docker's and podman's 10 s stop timeout", () => {
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const graceful = Number(/SERVICE_GRACEFUL_TIMEOUT=(\d+)\/' config\.env/.exec(text)?.[1]);
    expect(graceful).to.be.above(0);
    const { requestsMs } = drainDeadlines(graceful);
    // The primary's SIGKILL of what is left comes KILL_GRACE_MS after the graceful timeout; the
    // primary then exits at once. Keep a second for the signal's delivery and the exit.
    expect(graceful + KILL_GRACE_MS + 1000).to.be.at.most(10_000);
    expect(requestsMs, 'requests still get 5 s').to.be.at.least(5000);
  });

  it('the entrypoint starts the service from the image layout; the healthcheck passes; SIGTERM stops it (exit 0)', async () => {
    const img = readDockerfile();
    // Lay out the runtime stage's WORKDIR as the image has it.
    const app = join(tempDir('astron-image-'), img.workdir.replace(/^\//, ''));
    mkdirSync(app, { recursive: true });
    cpSync(join(ROOT, 'dist'), join(app, 'dist'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
    for (const [src, dest] of img.copies) {
      cpSync(join(ROOT, src), dest.endsWith('/') ? join(app, dest, src) : join(app, dest));
    }
    const port = await freePort();
    // `docker run -e SERVICE_PORT=...`: the environment wins over the baked-in config.env.
    const env = { SERVICE_PORT: String(port), SERVICE_WORKERS: '2', NODE_ENV: 'production' };
    const unhealthy = run(img.healthcheck, app, env);
    expect(await new Promise((r) => unhealthy.once('exit', r))).to.equal(1);

    const main = run([...img.entrypoint, ...img.cmd], app, env);
    let out = '';
    main.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    main.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 20000;
    while (!out.includes('ready: 2/2 workers on 0.0.0.0:') && Date.now() < deadline)
      await sleep(50);
    expect(out, out).to.contain(`ready: 2/2 workers on 0.0.0.0:${port}`);
    const hc = run(img.healthcheck, app, env);
    let hcOut = '';
    hc.stdout!.on('data', (d: Buffer) => (hcOut += d.toString()));
    expect(await new Promise((r) => hc.once('exit', r))).to.equal(0);
    expect(hcOut).to.contain('healthy');
    main.kill('SIGTERM');
    const code = await new Promise((r) => main.once('exit', r));
    expect(code, out).to.equal(0);
    rmSync(app, { recursive: true, force: true });
  });
});

describe('systemd notify protocol', function () {
  it('READY=1 when all workers are ready, RELOADING=1 + MONOTONIC_USEC then READY=1 around a reload, STOPPING=1', async () => {
    const dir = tempDir();
    const sock = join(dir, 'notify.sock');
    const receiver = spawn(
      'python3',
      [
        '-c',
        'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("listening",flush=True)\nwhile True:\n  print(s.recv(65536).decode().replace("\\n"," "),flush=True)',
        sock,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const got: string[] = [];
    receiver.stdout!.on('data', (d: Buffer) =>
      got.push(...d.toString().split('\n').filter(Boolean)),
    );
    while (!got.includes('listening')) await sleep(20);
    const svc = await startService({ env: { SERVICE_WORKERS: '2', NOTIFY_SOCKET: sock } });
    try {
      await svc.waitReady();
      const waitFor = async (re: RegExp) => {
        const end = Date.now() + 10000;
        while (!got.some((l) => re.test(l)) && Date.now() < end) await sleep(20);
        return got.find((l) => re.test(l));
      };
      const ready = await waitFor(/READY=1/);
      expect(ready).to.contain(`MAINPID=${svc.proc.pid}`);
      expect(ready).to.contain('STATUS=2 workers ready');
      svc.proc.kill('SIGHUP');
      const reloading = await waitFor(/RELOADING=1/);
      expect(reloading).to.match(/MONOTONIC_USEC=\d+/);
      await svc.waitForLog((l) => l.message === 'rolling reload done', 20000);
      expect(await waitFor(/READY=1 STATUS=reload ok/)).to.be.a('string');
      await svc.stop('SIGTERM');
      expect(await waitFor(/STOPPING=1/)).to.be.a('string');
      const order = got
        .filter((l) => /READY=1|RELOADING=1|STOPPING=1/.test(l))
        .map((l) => /(READY|RELOADING|STOPPING)=1/.exec(l)![1]);
      expect(order).to.deep.equal(['READY', 'RELOADING', 'READY', 'STOPPING']);
    } finally {
      await svc.stop('SIGKILL');
      receiver.kill();
    }
  });
});
