// Real Redis servers for tests, on loopback ports of their own, in a temporary directory:
// a standalone server the test may stop and restart, and a three-node Redis Cluster joined with
// `redis-cli --cluster create`. Everything started here is stopped by its own pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from './service.js';

export function haveRedisServer(): boolean {
  return (
    spawnSync('redis-server', ['--version']).status === 0 &&
    spawnSync('redis-cli', ['--version']).status === 0
  );
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = net.createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/** A free port below 55535 whose cluster-bus port (+10000) is free too. */
export async function freeRedisPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 25000);
    if ((await portFree(port)) && (await portFree(port + 10000))) return port;
  }
  throw new Error('no free port pair for redis');
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 10000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (check()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const cli = (port: number, ...args: string[]) =>
  spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {
    encoding: 'utf8',
    timeout: 5000,
  });

export class RedisServer {
  private proc?: ChildProcess;

  constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly extra: string[] = [],
  ) {}

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.proc = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
        ...this.extra,
      ],
      { stdio: 'ignore' },
    );
    await waitFor(
      `redis-server on ${this.port}`,
      () => cli(this.port, 'PING').stdout.trim() === 'PONG',
    );
  }

  /** Stops this server (SIGTERM to its own pid) and waits until the port is closed. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }

  cli(...args: string[]): string {
    return cli(this.port, ...args).stdout.trim();
  }
}

/** One standalone server in its own temporary directory. */
export async function startRedisServer(): Promise<RedisServer & { cleanup(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'astron-redis-'));
  const server = new RedisServer(await freeRedisPort(), dir);
  await server.start();
  return Object.assign(server, {
    async cleanup() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  });
}

export interface RedisCluster {
  nodes: RedisServer[];
  /** `host:port,host:port,host:port` for REDIS_CLUSTER_ADDR. */
  addr: string;
  stop(): Promise<void>;
}

/** Three `--cluster-enabled yes` nodes, joined with `redis-cli --cluster create`, all slots covered. */
export async function startRedisCluster(size = 3): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'astron-redis-cluster-'));
  const nodes: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < size; i++) {
      const port = await freeRedisPort();
      const node = new RedisServer(port, dir, [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '2000',
      ]);
      await node.start();
      nodes.push(node);
    }
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => n.addr),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 30000 },
    );
    if (create.status !== 0)
      throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    await waitFor(
      'cluster_state:ok on every node',
      () => nodes.every((n) => /cluster_state:ok/.test(n.cli('CLUSTER', 'INFO'))),
      20000,
    );
    return { nodes, addr: nodes.map((n) => n.addr).join(','), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
