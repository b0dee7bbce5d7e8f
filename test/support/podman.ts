// Podman for the container test: a private configuration and storage in a state folder of the
// test's own (the machine's /etc/containers and /var/lib/containers are never used or changed),
// the base image made locally, the Dockerfile built as users build it, containers run with host
// networking and removed by the names this run gave them.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { ROOT } from './service.js';

/** Outside the clone: the base image (about a minute to make) is reused by later runs and clones. */
export const STATE = process.env.ASTRON_CONTAINER_STATE ?? '/var/tmp/astron-agent-container';
/** This run's tag (concurrent runs share the storage and its cache, never a tag); untagged at the end. */
export const IMAGE = `localhost/astron-agent:test-${process.pid}`;
export const BASE = 'localhost/node:20-bookworm-slim';
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** podman's environment: the private containers.conf and storage.conf. */
export function podmanEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CONTAINERS_CONF: join(STATE, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: join(STATE, 'storage.conf'),
    TMPDIR: join(STATE, 'tmp'),
  };
}

/** Runs a command to its end (output collected); never throws on a non-zero exit. */
export function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; nice?: boolean } = {},
): Promise<Run> {
  const t0 = Date.now();
  const [file, argv] = opts.nice ? ['nice', ['-n', '10', cmd, ...args]] : [cmd, args];
  return new Promise((resolve) => {
    const child = spawn(file, argv, {
      cwd: ROOT,
      env: opts.env ?? podmanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = opts.timeoutMs
      ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
      : undefined;
    child.on('error', (err) => {
      stderr += String(err);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

export const podman = (args: string[], opts: { timeoutMs?: number; nice?: boolean } = {}) =>
  run('podman', args, { timeoutMs: opts.timeoutMs ?? 120_000, nice: opts.nice });

/** Throws with podman's output unless it exited 0. */
export async function podmanOk(args: string[], opts: { timeoutMs?: number } = {}): Promise<Run> {
  const r = await podman(args, opts);
  if (r.code !== 0)
    throw new Error(`podman ${args.join(' ')}: exit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r;
}

function hardLimit(flag: string): number {
  const r = spawnSync('bash', ['-c', `ulimit -H${flag}`], { encoding: 'utf8' });
  const v = r.stdout.trim();
  return v === 'unlimited' || v === '' ? Number.MAX_SAFE_INTEGER : Number(v);
}

/**
 * The private configuration. runc (crun refuses the hybrid cgroup layout of these machines),
 * cgroupfs and file events (no systemd), and the containers' nofile/nproc limits at or below
 * what this process may have: podman asks by default for more than root may raise here (no
 * CAP_SYS_RESOURCE), and runc then fails with "error setting rlimit type 6/7". nproc is also
 * held to pid_max, above which runc's setrlimit failed here.
 */
export function writeConfig(): void {
  for (const d of ['storage', 'run', 'tmp', 'base', 'networks'])
    mkdirSync(join(STATE, d), { recursive: true });
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) || 32768;
  const nofile = Math.min(hardLimit('n'), 1_048_576);
  const nproc = Math.min(hardLimit('u'), pidMax);
  writeFileSync(
    join(STATE, 'containers.conf'),
    [
      '# written by test/support/podman.ts for the container test; private to it',
      '[containers]',
      `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
      '[engine]',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      'runtime = "runc"',
      '[network]',
      `network_config_dir = "${join(STATE, 'networks')}"`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(STATE, 'storage.conf'),
    [
      '[storage]',
      'driver = "overlay"',
      `graphroot = "${join(STATE, 'storage')}"`,
      `runroot = "${join(STATE, 'run')}"`,
      '',
    ].join('\n'),
  );
}

/** Installs podman, runc and debootstrap when missing; the reason when that cannot be done. */
export async function install(): Promise<string | undefined> {
  const r = await run('bash', [join(ROOT, 'test/container/install.sh')], {
    env: process.env,
    timeoutMs: 600_000,
    nice: true,
  });
  if (r.code !== 0) return `podman could not be installed: ${(r.stderr || r.stdout).trim()}`;
  const v = await run('podman', ['--version'], { env: process.env });
  if (v.code !== 0) return `podman does not run: ${v.stderr.trim()}`;
  return undefined;
}

/** The locally made base image (test/container/base-image.sh; cached in STATE). */
export async function baseImage(): Promise<Run> {
  const r = await run('bash', [join(ROOT, 'test/container/base-image.sh'), STATE], {
    timeoutMs: 900_000,
    nice: true,
  });
  if (r.code !== 0) throw new Error(`base image: exit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r;
}

/**
 * `podman build` of the Dockerfile as a user behind this machine's TLS-intercepting proxy runs
 * it: the docker format (the OCI format drops HEALTHCHECK), host networking, and the machine's
 * CA bundle as the optional build secret `ca_bundle`.
 */
export async function buildImage(tag = IMAGE): Promise<Run> {
  const args = ['build', '--format', 'docker', '--network=host', '-t', tag];
  const ca = process.env.ASTRON_BUILD_CA ?? HOST_CA;
  if (ca && existsSync(ca)) args.push('--secret', `id=ca_bundle,src=${ca}`);
  args.push(ROOT);
  const r = await run('podman', args, { timeoutMs: 1_200_000, nice: true });
  if (r.code !== 0) throw new Error(`podman build: exit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r;
}

/** Image size and the size of the layers on top of the base image, in bytes. */
export async function imageSizes(
  tag = IMAGE,
): Promise<{ image: number; base: number; layers: { size: number; createdBy: string }[] }> {
  const size = async (t: string) =>
    Number((await podmanOk(['image', 'inspect', '--format', '{{.Size}}', t])).stdout.trim());
  const hist = await podmanOk(['history', '--format', 'json', tag]);
  const layers = (
    JSON.parse(hist.stdout) as { size: number; CreatedBy?: string; createdBy?: string }[]
  ).map((l) => ({ size: l.size, createdBy: l.CreatedBy ?? l.createdBy ?? '' }));
  return { image: await size(tag), base: await size(BASE), layers };
}

/** A free loopback port in 18000-18099 (the range this project's tests may use). */
export async function portInRange(): Promise<number> {
  const start = 18000 + Math.floor(Math.random() * 100);
  for (let i = 0; i < 100; i++) {
    const port = 18000 + ((start - 18000 + i) % 100);
    const free = await new Promise<boolean>((res) => {
      const s = net.createServer();
      s.once('error', () => res(false));
      s.listen({ port, host: '0.0.0.0', exclusive: true }, () => s.close(() => res(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 18000-18099');
}

/** Containers of this run, removed by name at the end. */
export class Containers {
  private readonly names = new Set<string>();
  private n = 0;
  constructor(private readonly prefix = `astron-ct-${process.pid}`) {}

  name(): string {
    const name = `${this.prefix}-${++this.n}`;
    this.names.add(name);
    return name;
  }

  /** `podman run -d` with host networking; returns the container's name. */
  async start(args: string[], env: Record<string, string>, cmd: string[] = []): Promise<string> {
    const name = this.name();
    const e = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
    await podmanOk(['run', '-d', '--name', name, '--network=host', ...e, ...args, IMAGE, ...cmd]);
    return name;
  }

  /** Removes this run's containers; with `untag`, also this run's image tag (the layers stay cached). */
  async removeAll(untag = false): Promise<void> {
    for (const name of this.names) await podman(['rm', '-f', '-v', '-t', '0', '--ignore', name]);
    this.names.clear();
    if (untag) await podman(['untag', IMAGE, IMAGE]);
  }
}

export async function logs(name: string): Promise<string> {
  const r = await podman(['logs', name]);
  return r.stdout + r.stderr;
}

export async function inspect(name: string, format: string): Promise<string> {
  return (await podmanOk(['inspect', '--format', format, name])).stdout.trim();
}
