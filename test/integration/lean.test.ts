// Issue 14 point 3: every process loads only what its configuration uses. The real CLI runs with
// test/support/load-trace.mjs preloaded, which lists every module each process imports (its own
// files, each package's entry point, node: builtins); the lists are then checked.
import { expect } from 'chai';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hitHealth, ROOT, runCli, sleep, startService, tempDir } from '../support/service.js';

const PRELOAD = `--import=${join(ROOT, 'test/support/load-trace.mjs')}`;

/** pid -> the packages (and dist/ files) that process loaded. */
function traces(dir: string): Map<number, { packages: Set<string>; files: string[] }> {
  const out = new Map<number, { packages: Set<string>; files: string[] }>();
  for (const f of readdirSync(dir)) {
    const urls = readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean);
    const packages = new Set<string>();
    for (const u of urls) {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
      if (m) packages.add(m[1]!);
    }
    const files = urls.filter((u) => u.includes('/dist/')).map((u) => u.replace(/.*\/dist\//, ''));
    out.set(Number(f.replace('.txt', '')), { packages, files });
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
];

describe('lean processes: only what the configuration uses is loaded', function () {
  it('a SQLite worker without tracing, OTLP, MCP, Redis or WebSocket clients loads none of their packages (not even @opentelemetry/api); the primary no HTTP stack', async () => {
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
    // The primary supervises: no HTTP framework, no store driver, no agent code.
    for (const p of [...OPTIONAL, 'express', 'better-sqlite3', 'eventsource-parser'])
      expect([...primary!.packages], `primary loaded ${p}`).to.not.include(p);
    expect(primary!.files.filter((f) => /^lib\/(http|agent|store|worker)\//.test(f))).to.deep.equal(
      [],
    );
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
        expect(files.sort()).to.deep.equal(['bin/agent.js', 'lib/version.js']);
      else expect(files.filter((f) => f.startsWith('lib/supervisor/'))).to.deep.equal([]);
      expect([...trace!.packages]).to.deep.equal([]);
    }
  });
});
