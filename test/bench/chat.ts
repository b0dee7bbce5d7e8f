// Issue 6 figures: time to first token and total time of a 50-chunk stream through the agent
// (POST /agent/v1/chat/completions, stream:true, 2 workers) against calling the fake upstream
// directly, in the same run, interleaved, at 1 and 50 concurrent streams; then 1000 concurrent
// open streams on 2 workers (errors counted, memory per open stream from the workers' RSS); then
// the LLM client alone, ours (node:http + eventsource-parser) against the openai SDK.
// The fake upstream runs in its own process; the client is this process. Bounded in time.
//
// 50 concurrent streams are measured twice. "steady": the 50 client loops start spread over one
// stream's length, so that 50 streams are open at any moment and new ones arrive evenly, as with
// streams of varied lengths. "burst": the 50 loops start at the same instant; as every stream
// lasts the same second, each new wave of 50 requests then arrives at once (a thundering herd:
// 25 requests queued on each worker's event loop at the same moment).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { LlmClient } from '../../lib/agent/llm.js';
import { createBot } from '../support/chat.js';
import { freePort, ROOT, sleep, startService } from '../support/service.js';
import { fmt, percentile, procCpuMs, type Bench } from './lib.js';

// 50 content chunks 20 ms apart (~50 tokens/s, an ordinary LLM pace): ~1 s a stream.
const PACED = 'paced-50-20';
const HOLD = 'paced-50-400'; // 50 chunks 400 ms apart: ~20 s open (the 1000-stream run)

interface Sample {
  ttft: number;
  total: number;
  ok: boolean;
  /** Streams of the same batch open when this one started. */
  others?: number;
  /** How many streams its client loop ran before it (in a burst: its wave). */
  wave?: number;
  round?: number;
}

function rssMb(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return kb / 1024;
}

export async function startUpstream(): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'test/support/fake-llm.ts'), String(port)],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && res());
    proc.once('exit', (code) => rej(new Error(`fake upstream exited with ${code}`)));
  });
  return { port, proc };
}

/** One streaming POST; resolves with the time to the first body byte and to the end. */
function stream(
  agent: http.Agent,
  port: number,
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<Sample> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let ttft = NaN;
    let text = '';
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', ...headers },
      },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (Number.isNaN(ttft)) ttft = performance.now() - t0;
          text += d;
        });
        res.on('end', () => {
          const ok =
            res.statusCode === 200 &&
            text.endsWith('data: [DONE]\n\n') &&
            !/"code":(?!0[,}])-?\d/.test(text);
          resolve({ ttft, total: performance.now() - t0, ok });
        });
        res.on('error', () => resolve({ ttft, total: performance.now() - t0, ok: false }));
      },
    );
    req.on('error', () => resolve({ ttft, total: performance.now() - t0, ok: false }));
    req.end(body);
  });
}

/** `n` streams, `c` at a time; the `c` loops start spread over `spreadMs`. */
async function batch(
  n: number,
  c: number,
  one: () => Promise<Sample>,
  spreadMs = 0,
): Promise<Sample[]> {
  const out: Sample[] = [];
  let next = 0;
  let open = 0;
  await Promise.all(
    Array.from({ length: c }, async (_, i) => {
      if (spreadMs > 0) await sleep((i * spreadMs) / c);
      let wave = 0;
      while (next < n) {
        next++;
        const others = open++;
        const sample = await one();
        open--;
        out.push({ ...sample, others, wave: wave++ });
      }
    }),
  );
  return out;
}

const p = (xs: number[], q: number) => percentile(xs, q);

const bench: Bench = {
  title:
    'chat streaming: time to first token through the agent vs the upstream directly; 1000 open streams',
  async run() {
    const upstream = await startUpstream();
    const svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        LOG_LEVEL: 'info',
        LLM_TIMEOUT: '60000',
        // BENCH_SCHEDULING=none|rr: the same figures under another policy than the default
        ...(process.env.BENCH_SCHEDULING
          ? { SERVICE_SCHEDULING: process.env.BENCH_SCHEDULING }
          : {}),
      },
    });
    try {
      await svc.waitReady();
      await sleep(1000);
      // Serving workers only (the warm spare is a child too, but holds no streams).
      const pids = svc.readyWorkerPids();
      if (pids.length !== 2) throw new Error(`expected 2 workers, found ${pids.length}`);
      const api = `http://127.0.0.1:${upstream.port}/v1`;
      const app = 'bench_app';
      await createBot(svc.port, app, 'bench_paced', { domain: PACED, api });
      await createBot(svc.port, app, 'bench_hold', { domain: HOLD, api });
      const agent = new http.Agent({ keepAlive: true, maxSockets: 2000 });
      const hdr = { 'x-consumer-username': app };
      const viaAgent = (bot: string) => () =>
        stream(
          agent,
          svc.port,
          '/agent/v1/chat/completions',
          JSON.stringify({
            bot_id: bot,
            stream: true,
            messages: [{ role: 'user', content: 'count' }],
          }),
          hdr,
        );
      const direct = (model: string) => () =>
        stream(
          agent,
          upstream.port,
          '/v1/chat/completions',
          JSON.stringify({
            messages: [
              { role: 'system', content: 's' },
              { role: 'user', content: 'count' },
            ],
            model,
            stream: true,
          }),
          { Authorization: 'Bearer sk-test' },
        );

      // warm-up: JIT, connection pools, the SQLite page cache, the openai module in both workers
      await batch(200, 20, viaAgent('bench_paced'));
      await batch(200, 20, direct(PACED));

      console.log(
        `fake upstream (own process) streams 50 chunks 20 ms apart; client in the bench process; 2 workers`,
      );
      console.log(
        `machine: ${process.env.BENCH_NOTE ?? 'shared 2-core machine (other jobs running)'}; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
      );
      const parts = (process.env.BENCH_CHAT_PARTS ?? 'ttft,cost,open,client').split(',');
      if (parts.includes('cost')) await streamCost(svc.port, api, agent, pids);
      // BENCH_CHAT_TTFT=one,steady,burst (all by default): some rows of the ttft part alone.
      const rows = (process.env.BENCH_CHAT_TTFT ?? 'one,steady,burst').split(',');
      for (const [c, n, spread, label] of (parts.includes('ttft')
        ? (
            [
              ['one', 1, 60, 0, '1 stream at a time'],
              ['steady', 50, 1200, 1000, '50 concurrent streams, steady (starts spread over 1 s)'],
              ['burst', 50, 600, 0, '50 concurrent streams, burst (50 requests arriving at once)'],
            ] as const
          )
            .filter(([row]) => rows.includes(row))
            .map(([, ...rest]) => rest)
        : []) as [number, number, number, string][]) {
        const d: Sample[] = [];
        const a: Sample[] = [];
        let workerCpu = 0;
        const accepted0 = await acceptedConnections(svc.port);
        for (let round = 0; round < 3; round++) {
          d.push(...(await batch(Math.round(n / 3), c, direct(PACED), spread)));
          const c0 = pids.reduce((sum, pid) => sum + procCpuMs(pid), 0);
          a.push(
            ...(await batch(Math.round(n / 3), c, viaAgent('bench_paced'), spread)).map((x) => ({
              ...x,
              round,
            })),
          );
          workerCpu += pids.reduce((sum, pid) => sum + procCpuMs(pid), 0) - c0;
        }
        const bad = d.filter((s) => !s.ok).length + a.filter((s) => !s.ok).length;
        // Steady rows count the streams that started with the other 49 open (not the ramp up
        // and down at each round's start and end).
        const full = (xs: Sample[]) => (spread > 0 ? xs.filter((x) => x.others! >= c - 1) : xs);
        const aAll = a.length;
        d.splice(0, d.length, ...full(d));
        a.splice(0, a.length, ...full(a));
        const col = (xs: Sample[], k: 'ttft' | 'total', q: number) =>
          p(
            xs.map((s) => s[k]),
            q,
          );
        console.log(
          `\n${label}: ${aAll} streams each way, 3 interleaved rounds, errors: ${bad}` +
            (spread > 0
              ? `; counted: the ${d.length} / ${a.length} that started with ${c - 1} others open`
              : ''),
        );
        console.log('                      TTFT p50   TTFT p99   total p50   total p99   (ms)');
        for (const [name, xs] of [
          ['upstream directly', d],
          ['through the agent', a],
        ] as const) {
          console.log(
            `  ${name.padEnd(18)} ${fmt(col(xs, 'ttft', 50), 2).padStart(8)} ${fmt(col(xs, 'ttft', 99), 2).padStart(10)} ${fmt(col(xs, 'total', 50), 2).padStart(11)} ${fmt(col(xs, 'total', 99), 2).padStart(11)}`,
          );
        }
        if (spread === 0 && c > 1) {
          // Where the tail comes from: the waves of the slowest 1 % (wave 0 of a round opens the
          // connections that the later waves reuse).
          const slow = [...a].sort((x, y) => y.ttft - x.ttft).slice(0, Math.ceil(a.length / 100));
          console.log(
            `  slowest 1 % through the agent (TTFT ms @ round.wave): ${slow.map((x) => `${fmt(x.ttft, 1)}@${x.round}.${x.wave}`).join(', ')}`,
          );
          const later = a.filter((x) => x.round !== 0 || x.wave !== 0);
          console.log(
            `  without the first wave (new connections on both hops): added TTFT p99 ${fmt(col(later, 'ttft', 99) - col(d, 'ttft', 99), 2)} ms`,
          );
        }
        const addP50 = col(a, 'ttft', 50) - col(d, 'ttft', 50);
        const addP99 = col(a, 'ttft', 99) - col(d, 'ttft', 99);
        console.log(
          `  added TTFT: p50 ${fmt(addP50, 2)} ms (target <= 5), p99 ${fmt(addP99, 2)} ms (target <= 20)`,
        );
        console.log(
          `  added total: p50 ${fmt(col(a, 'total', 50) - col(d, 'total', 50), 2)} ms, p99 ${fmt(col(a, 'total', 99) - col(d, 'total', 99), 2)} ms`,
        );
        console.log(
          `  worker CPU per stream (schedstat, every thread): ${fmt(workerCpu / aAll, 2)} ms`,
        );
        // leastconn only: how many of the streams came on a new connection (the rest reused one).
        const accepted1 = await acceptedConnections(svc.port);
        if (accepted0 !== undefined && accepted1 !== undefined)
          console.log(`  connections accepted by the primary: ${accepted1 - accepted0 - 1}`);
      }

      // --- 1000 concurrent open streams ------------------------------------------------------
      if (!parts.includes('open')) {
        agent.destroy();
        if (parts.includes('client')) await compareClients(api);
        return;
      }
      await sleep(1000);
      const idle = pids.map(rssMb);
      const N = 1000;
      const started = performance.now();
      let finished = false;
      const all = Promise.all(Array.from({ length: N }, () => viaAgent('bench_hold')())).finally(
        () => (finished = true),
      );
      // Sample every 500 ms while the streams run (~20 s each; bounded at 90 s): the most
      // streams open at once (the chat_streams_open gauge) and the workers' RSS at that moment.
      let openPeak = 0;
      let rssAtPeak = idle;
      let rssMax = idle;
      while (!finished && performance.now() - started < 90_000) {
        await sleep(500);
        const now = pids.map(rssMb);
        rssMax = rssMax.map((v, j) => Math.max(v, now[j]!));
        const m = /^chat_streams_open (\d+)/m.exec((await scrape(svc.port)) ?? '');
        const open = m ? Number(m[1]) : 0;
        if (open > openPeak) {
          openPeak = open;
          rssAtPeak = now;
        }
      }
      const results = await all;
      const took = performance.now() - started;
      const errors = results.filter((r) => !r.ok).length;
      const added = rssAtPeak.reduce((sum, v, j) => sum + (v - idle[j]!), 0);
      console.log(`\n${N} concurrent streams (50 chunks 400 ms apart, ~20 s each), 2 workers:`);
      console.log(
        `  errors: ${errors} of ${N}; all done in ${fmt(took / 1000, 1)} s; most open at once (chat_streams_open): ${openPeak}`,
      );
      console.log(
        `  worker RSS idle ${idle.map((v) => fmt(v, 0)).join(' + ')} MB -> ${rssAtPeak.map((v) => fmt(v, 0)).join(' + ')} MB with ${openPeak} open (max ${rssMax.map((v) => fmt(v, 0)).join(' + ')} MB)`,
      );
      const grown = rssMax.reduce((sum, v, j) => sum + (v - idle[j]!), 0);
      const perStream = (mb: number) => fmt(openPeak > 0 ? (mb * 1024) / openPeak : NaN, 0);
      console.log(
        `  memory per open stream: ${perStream(grown)} KB upper bound (max RSS growth of both workers, garbage included, / ${openPeak} open); ${perStream(added)} KB from the RSS sampled at that moment`,
      );
      agent.destroy();

      if (parts.includes('client')) await compareClients(api);
    } finally {
      await svc.stop();
      upstream.proc.kill('SIGTERM');
    }
  },
};

/**
 * What a stream costs the workers, split into its set-up and its tokens: worker CPU per stream
 * (every thread's schedstat run time, both workers) of 10-chunk and 100-chunk streams, 10 concurrent, in
 * interleaved rounds; per token = (CPU(100) - CPU(10)) / 90, set-up = CPU(10) - 10 x per token.
 * Measured twice. Unpaced (`chunks-N`, the figure quoted since issue 6): the fake upstream writes
 * the whole answer at once, so it arrives in one or two reads and the figure is the JavaScript
 * cost of an event with the system calls shared by many. Paced 1 ms apart (`paced-N-1`): one
 * event per read and per write to the client, as a real upstream streaming a token at a time.
 */
async function streamCost(
  port: number,
  api: string,
  agent: http.Agent,
  pids: number[],
): Promise<void> {
  const app = 'bench_app';
  for (const [name, tag, domain] of [
    ['unpaced', 'c', (n: number) => `chunks-${n}`],
    ['one event per read (1 ms apart)', 'p', (n: number) => `paced-${n}-1`],
  ] as const) {
    for (const n of [10, 100])
      await createBot(port, app, `bench_${tag}${n}`, { domain: domain(n), api });
    const one = (bot: string) => () =>
      stream(
        agent,
        port,
        '/agent/v1/chat/completions',
        JSON.stringify({
          bot_id: bot,
          stream: true,
          messages: [{ role: 'user', content: 'count' }],
        }),
        { 'x-consumer-username': app },
      );
    await batch(200, 10, one(`bench_${tag}10`));
    await batch(100, 10, one(`bench_${tag}100`));
    const N = 150;
    const rounds = Number(process.env.BENCH_ROUNDS ?? 8);
    const perStream: Record<number, number[]> = { 10: [], 100: [] };
    let bad = 0;
    for (let r = 0; r < rounds; r++) {
      for (const n of r % 2 ? [100, 10] : [10, 100]) {
        const c0 = pids.reduce((sum, pid) => sum + procCpuMs(pid), 0);
        const out = await batch(N, 10, one(`bench_${tag}${n}`));
        bad += out.filter((x) => !x.ok).length;
        perStream[n]!.push((pids.reduce((sum, pid) => sum + procCpuMs(pid), 0) - c0) / N);
      }
    }
    const tokenUs = perStream[100]!.map((v, i) => ((v - perStream[10]![i]!) / 90) * 1000);
    const setupUs = perStream[10]!.map((v, i) => v * 1000 - 10 * tokenUs[i]!);
    console.log(
      `\nworker CPU of a stream, ${name} 10- and 100-chunk streams, 10 concurrent, ${rounds} interleaved rounds of ${N}, errors: ${bad}:`,
    );
    console.log(
      `  per stream: 10 chunks ${fmt(p(perStream[10]!, 50), 3)} ms, 100 chunks ${fmt(p(perStream[100]!, 50), 3)} ms (medians)`,
    );
    console.log(
      `  set-up ${fmt(p(setupUs, 50), 0)} µs per stream (rounds p25-p75 ${fmt(p(setupUs, 25), 0)}-${fmt(p(setupUs, 75), 0)}), per token ${fmt(p(tokenUs, 50), 1)} µs (p25-p75 ${fmt(p(tokenUs, 25), 1)}-${fmt(p(tokenUs, 75), 1)})`,
    );
  }
}

/**
 * The LLM client alone, in this process: ours against the openai SDK (which it replaced), side
 * by side in interleaved rounds, on the fake upstream's unpaced 50-chunk stream: time to the
 * first delta and this process's CPU time per stream.
 */
async function compareClients(api: string): Promise<void> {
  const { default: OpenAI } = await import('openai');
  const sdk = new OpenAI({ baseURL: api, apiKey: 'sk-test', maxRetries: 0, timeout: 60_000 });
  const ours = new LlmClient({ timeoutMs: 60_000, maxRetries: 0 });
  const messages = [{ role: 'user' as const, content: 'count' }];
  const model = 'chunks-50';
  const clients: Record<string, () => AsyncIterable<string>> = {
    'openai SDK': async function* () {
      const stream = await sdk.chat.completions.create({ model, messages, stream: true });
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta?.content;
        if (text) yield text;
      }
    },
    'ours (node:http + eventsource-parser)': async function* () {
      const signal = new AbortController().signal;
      for await (const d of ours.stream({ domain: model, api, key: 'sk-test' }, messages, signal))
        if (d.content) yield d.content;
    },
  };
  const timed = async (make: () => AsyncIterable<string>): Promise<Sample> => {
    const t0 = performance.now();
    let ttft = NaN;
    let n = 0;
    for await (const _ of make()) {
      if (n++ === 0) ttft = performance.now() - t0;
    }
    return { ttft, total: performance.now() - t0, ok: n === 50 };
  };
  const stats: Record<string, { samples: Sample[]; cpuUs: number }> = {};
  for (const name of Object.keys(clients)) await batch(100, 10, () => timed(clients[name]!)); // warm-up
  for (let round = 0; round < 3; round++) {
    for (const [name, make] of Object.entries(clients)) {
      const st = (stats[name] ??= { samples: [], cpuUs: 0 });
      const c0 = process.cpuUsage();
      st.samples.push(...(await batch(300, 10, () => timed(make))));
      const c = process.cpuUsage(c0);
      st.cpuUs += c.user + c.system;
    }
  }
  console.log(
    '\nLLM client alone (this process), unpaced 50-chunk stream, 10 at a time, 900 streams each:',
  );
  console.log('                                          first delta p50   p99   CPU per stream');
  for (const [name, st] of Object.entries(stats)) {
    const bad = st.samples.filter((x) => !x.ok).length;
    const t = st.samples.map((x) => x.ttft);
    console.log(
      `  ${name.padEnd(38)} ${fmt(p(t, 50), 2).padStart(10)} ms ${fmt(p(t, 99), 2).padStart(5)} ms ${fmt(st.cpuUs / 1000 / st.samples.length, 3).padStart(8)} ms${bad ? ` (${bad} incomplete)` : ''}`,
    );
  }
  const [a, b] = Object.values(stats);
  console.log(
    `  CPU per stream, ours / SDK: ${fmt(b!.cpuUs / b!.samples.length / (a!.cpuUs / a!.samples.length), 2)}`,
  );
}

async function scrape(port: number): Promise<string | undefined> {
  return await new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
        let t = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (t += d));
        res.on('end', () => resolve(t));
      })
      .on('error', () => resolve(undefined));
  });
}

/** astron_agent_connections_accepted_total (leastconn only), counting the scrape's own. */
async function acceptedConnections(port: number): Promise<number | undefined> {
  const m = /^astron_agent_connections_accepted_total (\d+)/m.exec((await scrape(port)) ?? '');
  return m ? Number(m[1]) : undefined;
}

export default bench;
