// Issue 14 point 3: every process loads only what its configuration uses. The real CLI runs with
// test/support/load-trace.mjs preloaded, which lists every module each process imports (its own
// files, each package's entry point, node: builtins); the lists are then checked. dist/ is a
// bundle (tools/bundle.mjs): a loaded file of dist/ stands for every source its source map names,
// so a package bundled into a chunk counts as loaded by each process that loads the chunk.
import { expect } from 'chai';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hitHealth, ROOT, runCli, sleep, startService, tempDir } from '../support/service.js';

const PRELOAD = `--import=${join(ROOT, 'test/support/load-trace.mjs')}`;

const PACKAGE = /node_modules\/((?:@[^/]+\/)?[^/]+)/;

/** The files a loaded module stands for: a dist/ file's sources (its map), or the file itself. */
function sourcesOf(url: string): string[] {
  if (!url.startsWith('file:')) return [url];
  const file = fileURLToPath(url);
  const map = `${file}.map`;
  if (!file.includes('/dist/') || !existsSync(map)) return [file];
  const { sources } = JSON.parse(readFileSync(map, 'utf8')) as { sources: string[] };
  return sources.map((s) => resolve(dirname(map), s));
}

function urls(dir: string, pid: number): string[] {
  return readFileSync(join(dir, `${pid}.txt`), 'utf8')
    .split('\n')
    .filter(Boolean);
}

/** pid -> the packages and the project's own source files (lib/..., bin/...) that process loaded. */
function traces(dir: string): Map<number, { packages: Set<string>; files: string[] }> {
  const out = new Map<number, { packages: Set<string>; files: string[] }>();
  for (const f of readdirSync(dir)) {
    const urls = readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean);
    const packages = new Set<string>();
    const files = new Set<string>();
    for (const src of urls.flatMap(sourcesOf)) {
      const m = PACKAGE.exec(src);
      if (m) packages.add(m[1]!);
      else if (src.startsWith(ROOT)) files.add(relative(ROOT, src));
    }
    out.set(Number(f.replace('.txt', '')), { packages, files: [...files].sort() });
  }
  return out;
}

const OPTIONAL = [
  'mysql2',
  'ioredis',
  '@modelcontextprotocol/sdk',
  '@opentelemetry/api',
  '@opentelemetry/sdk-trace-base',
  '@opentelemetry/sdk-metrics',
  '@opentelemetry/exporter-trace-otlp-http',
  '@opentelemetry/exporter-trace-otlp-proto',
  '@opentelemetry/exporter-metrics-otlp-http',
  '@opentelemetry/resources',
  '@opentelemetry/core',
  'chokidar',
  'ws',
  'winston',
  'envalid',
  'zod',
  // mime-types' tables: no route of ours makes a MIME lookup (tools/bundle.mjs defers it)
  'mime-db',
];

describe('lean processes: only what the configuration uses is loaded', function () {
  it('a SQLite worker without tracing, OTLP, MCP, Redis or WebSocket clients loads none of their packages (not even @opentelemetry/api); the primary no HTTP stack and no prom-client before a scrape', async () => {
    const dir = tempDir('astron-trace-');
    const svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_SPARE_WORKERS: '0',
        NODE_OPTIONS: PRELOAD,
        LOAD_TRACE_DIR: dir,
      },
    });
    try {
      await svc.waitReady();
      await hitHealth(svc.port, 5);
      await sleep(1500); // what loads after ready (the metrics registry) too
    } finally {
      await svc.stop();
    }
    const all = traces(dir);
    const primary = all.get(svc.proc.pid!);
    const [workerPid] = svc.logs
      .filter((l) => l.message === 'worker ready')
      .map((l) => l.worker_pid);
    const worker = all.get(workerPid as number);
    expect(primary, 'trace of the primary').to.not.equal(undefined);
    expect(worker, 'trace of the worker').to.not.equal(undefined);
    // The worker serves with Express and SQLite and nothing optional.
    expect(worker!.packages).to.include('express').and.include('better-sqlite3');
    for (const p of OPTIONAL) expect([...worker!.packages], `worker loaded ${p}`).to.not.include(p);
    // The primary supervises: no HTTP framework, no store driver, no agent code; prom-client
    // only once someone scrapes (lib/supervisor/scrape-render.ts).
    for (const p of [...OPTIONAL, 'express', 'better-sqlite3', 'eventsource-parser', 'prom-client'])
      expect([...primary!.packages], `primary loaded ${p}`).to.not.include(p);
    expect(primary!.files.filter((f) => /^lib\/(http|agent|store|worker)\//.test(f))).to.deep.equal(
      [],
    ); // Nor Node's HTTP, TLS, zlib or crypto (prom-client's Pushgateway and the metrics token
    // check would bring them; METRICS_PORT loads node:http when set): ~5 MB of idle RSS.
    const builtins = urls(dir, svc.proc.pid!).filter((u) => u.startsWith('node:'));
    expect(builtins, 'the trace lists built-ins').to.include('node:cluster');
    for (const b of ['node:http', 'node:https', 'node:tls', 'node:zlib', 'node:crypto'])
      expect(builtins, `primary loaded ${b}`).to.not.include(b);
  });

  it('--help and version load no command module; config and health not the supervisor', async () => {
    for (const args of [['--help'], ['version'], ['config'], ['health', '-t', '300']]) {
      const dir = join(tempDir('astron-trace-'), 'out');
      mkdirSync(dir);
      const r = await runCli({ args, env: { NODE_OPTIONS: PRELOAD, LOAD_TRACE_DIR: dir } });
      expect(r.code, `${args[0]}: ${r.stderr}`).to.be.oneOf(args[0] === 'health' ? [1] : [0]);
      const [trace] = [...traces(dir).values()];
      const files = trace!.files;
      if (args[0] === '--help' || args[0] === 'version')
        expect(files).to.deep.equal(['bin/agent.ts', 'lib/version.ts']);
      else expect(files.filter((f) => f.startsWith('lib/supervisor/'))).to.deep.equal([]);
      expect([...trace!.packages]).to.deep.equal([]);
    }
  });
});
