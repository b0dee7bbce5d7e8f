// `tsx test/bench/profile-worker.ts CASE OUTDIR [seconds]`: one worker (no spare) under load with
// `node --cpu-prof`, its profile's top ten functions by self time printed afterwards (issue 14).
// CASE: health | sqlite | redis (MySQL + Redis, cache hit; REDIS_CLIENT_CACHE passed on) | chat (50-chunk streams from the fake
// upstream, 50 at a time, bursts; PROFILE_MODEL and PROFILE_CONCURRENCY change that) |
// chat-traced (the same with OTLP traces to a local receiver; OTEL_TRACES_SAMPLER and _ARG, default
// 0.1, are passed on).
// Ports: PROFILE_PORT (default 19101) for the service, +1 for the fake upstream.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { sampleConfig } from '../support/bot-config.js';
import { createBot } from '../support/chat.js';
import { mysqlEnv, mysqlTargetOrLocal, scratchDatabase } from '../support/mysql.js';
import { OtlpReceiver } from '../support/otlp-receiver.js';
import { request, ROOT, sleep, startService } from '../support/service.js';
import { busyMs, topSelf } from './cpuprofile-top.js';
import { chatStream, load } from './lib.js';

const [kind = 'health', dir = '/tmp/prof', secs = '10'] = process.argv.slice(2);
const port = Number(process.env.PROFILE_PORT ?? 19101);
const env: Record<string, string> = {
  SERVICE_WORKERS: '1',
  SERVICE_SPARE_WORKERS: '0',
  SERVICE_PORT: String(port),
};
let db: Awaited<ReturnType<typeof scratchDatabase>> | undefined;
let upstream: ReturnType<typeof spawn> | undefined;
let receiver: OtlpReceiver | undefined;
if (kind === 'redis') {
  db = await scratchDatabase(mysqlTargetOrLocal());
  Object.assign(env, mysqlEnv(db.target), { REDIS_ADDR: '127.0.0.1:6379' });
  // REDIS_CLIENT_CACHE=0 profiles the read with its Redis round trip (no near cache).
  if (process.env.REDIS_CLIENT_CACHE) env.REDIS_CLIENT_CACHE = process.env.REDIS_CLIENT_CACHE;
  const r = new Redis('redis://127.0.0.1:6379');
  await r.quit();
}
if (kind.startsWith('chat')) {
  upstream = spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'test/support/fake-llm.ts'), String(port + 1)],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((res) =>
    upstream!.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && res()),
  );
}
if (kind === 'chat-traced') {
  receiver = await new OtlpReceiver().start();
  Object.assign(env, {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.tracesUrl,
    ...(process.env.OTEL_TRACES_SAMPLER
      ? {
          OTEL_TRACES_SAMPLER: process.env.OTEL_TRACES_SAMPLER,
          OTEL_TRACES_SAMPLER_ARG: process.env.OTEL_TRACES_SAMPLER_ARG ?? '0.1',
        }
      : {}),
  });
}
const svc = await startService({ env, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`] });
const before = new Set(readdirSync(dir));
try {
  await svc.waitReady();
  const [pid] = svc.readyWorkerPids();
  const url = `http://127.0.0.1:${port}`;
  let served = 0;
  const deadline = Date.now() + Number(secs) * 1000;
  if (kind === 'health') {
    served = (await load(`${url}/health`, { duration: Number(secs) })).requests;
  } else if (kind === 'sqlite' || kind === 'redis') {
    await request(port, '/agent/v1/bot-config', {
      method: 'POST',
      body: JSON.stringify(sampleConfig('prof_app', 'prof_bot')),
      headers: { 'Content-Type': 'application/json' },
    });
    served = (
      await load(`${url}/agent/v1/bot-config?app_id=prof_app&bot_id=prof_bot`, {
        duration: Number(secs),
      })
    ).requests;
  } else {
    await createBot(port, 'prof_app', 'prof_bot', {
      domain: process.env.PROFILE_MODEL ?? 'paced-50-20',
      api: `http://127.0.0.1:${port + 1}/v1`,
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 100 });
    const body = JSON.stringify({
      bot_id: 'prof_bot',
      stream: true,
      messages: [{ role: 'user', content: 'count' }],
    });
    const one = () => chatStream(agent, port, body, 'prof_app');
    while (Date.now() < deadline) {
      const c = Number(process.env.PROFILE_CONCURRENCY ?? 50);
      await Promise.all(Array.from({ length: c }, one));
      served += c;
    }
    agent.destroy();
  }
  console.log(`worker pid ${pid}; ${served} requests`);
  await svc.stop();
  await sleep(500);
  const mine = readdirSync(dir).filter((f) => !before.has(f) && f.includes(`.${pid}.`));
  for (const f of mine) {
    console.log(`${join(dir, f)}:`);
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    const busy = busyMs(p);
    console.log(
      `  busy ${busy.toFixed(0)} ms (start-up included): ${((busy * 1000) / served).toFixed(1)} µs per request`,
    );
    for (const r of topSelf(p, 10))
      console.log(
        `  ${(r.share * 100).toFixed(1).padStart(5)} %  ${(r.us / 1000).toFixed(0).padStart(6)} ms  ${r.name}`,
      );
  }
} finally {
  if (svc.alive) await svc.stop();
  await db?.drop();
  upstream?.kill('SIGTERM');
  await receiver?.stop();
}
