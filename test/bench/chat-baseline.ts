// `BENCH_BASELINE=<other checkout>/dist/bin/agent.js npm run bench chat-baseline`: a chat stream's
// worker CPU, split into set-up and per token (unpaced 10- vs 100-chunk streams, 10 concurrent),
// of this build and of another build side by side in one run: two services of 2 workers each,
// the same fake upstream, rounds interleaved (A B, B A, ...), and the per-round ratio. This is
// how a "per token halved" claim is checked on a machine whose speed varies between runs: a
// figure from an earlier run on another day is not a reference. Skipped without BENCH_BASELINE;
// BENCH_BASELINE_ROUNDS (default 40) sets the rounds.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { createBot } from '../support/chat.js';
import { CLI, freePort, sleep, tempDir } from '../support/service.js';
import { startUpstream } from './chat.js';
import { chatStream, fmt, get200, percentile, processTree, procCpuMs, type Bench } from './lib.js';

interface Side {
  name: string;
  port: number;
  proc: ChildProcess;
  pids: number[];
}

async function startSide(name: string, cli: string, api: string): Promise<Side> {
  const port = await freePort();
  const proc = spawn(process.execPath, [cli, 'start'], {
    cwd: tempDir('astron-bench-'),
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      SERVICE_PORT: String(port),
      SERVICE_WORKERS: '2',
      SERVICE_SPARE_WORKERS: '0',
      LOG_LEVEL: 'warn',
    },
    stdio: 'ignore',
  });
  const until = Date.now() + 30000;
  while (!(await get200(port))) {
    if (proc.exitCode !== null || Date.now() > until) {
      proc.kill('SIGKILL');
      throw new Error(`${name} did not start`);
    }
    await sleep(50);
  }
  await sleep(1000);
  for (const n of [10, 100])
    await createBot(port, 'bench_app', `bench_c${n}`, { domain: `chunks-${n}`, api });
  return { name, port, proc, pids: processTree(proc.pid!).slice(1) };
}

const bench: Bench = {
  title: 'chat stream CPU (set-up, per token) of this build against a baseline build, side by side',
  async run() {
    const baseline = process.env.BENCH_BASELINE;
    if (!baseline || !existsSync(baseline)) {
      console.log(
        "skipped: set BENCH_BASELINE to another build's dist/bin/agent.js (e.g. a worktree of an older commit, built)",
      );
      return;
    }
    const up = await startUpstream();
    const api = `http://127.0.0.1:${up.port}/v1`;
    const sides: Side[] = [];
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    try {
      sides.push(await startSide('baseline', baseline, api));
      sides.push(await startSide('this build', CLI, api));
      const run = async (side: Side, n: number, total: number) => {
        const body = JSON.stringify({
          bot_id: `bench_c${n}`,
          stream: true,
          messages: [{ role: 'user', content: 'count' }],
        });
        let next = 0;
        let bad = 0;
        await Promise.all(
          Array.from({ length: 10 }, async () => {
            while (next++ < total)
              if (!(await chatStream(agent, side.port, body, 'bench_app'))) bad++;
          }),
        );
        if (bad > 0) throw new Error(`${side.name}: ${bad} streams failed`);
      };
      for (const s of sides) {
        await run(s, 10, 200);
        await run(s, 100, 100);
      }
      const N = 150;
      // Rounds are short (a second or two each) and their ratios spread widely: many of them.
      const rounds = Number(process.env.BENCH_BASELINE_ROUNDS ?? 40);
      const token = new Map<Side, number[]>(sides.map((s) => [s, []]));
      const setup = new Map<Side, number[]>(sides.map((s) => [s, []]));
      for (let r = 0; r < rounds; r++) {
        for (const s of r % 2 ? [...sides].reverse() : sides) {
          const per: Record<number, number> = {};
          for (const n of r % 2 ? [100, 10] : [10, 100]) {
            const c0 = s.pids.reduce((sum, pid) => sum + procCpuMs(pid), 0);
            await run(s, n, N);
            per[n] = (s.pids.reduce((sum, pid) => sum + procCpuMs(pid), 0) - c0) / N;
          }
          const t = ((per[100]! - per[10]!) / 90) * 1000;
          token.get(s)!.push(t);
          setup.get(s)!.push(per[10]! * 1000 - 10 * t);
        }
      }
      const p = percentile;
      console.log(
        `unpaced 10- and 100-chunk streams, 10 concurrent, ${rounds} interleaved rounds of ${N}; baseline ${baseline}`,
      );
      for (const s of sides) {
        const t = token.get(s)!;
        const u = setup.get(s)!;
        console.log(
          `  ${s.name.padEnd(10)}  per token ${fmt(p(t, 50), 1)} µs (p25-p75 ${fmt(p(t, 25), 1)}-${fmt(p(t, 75), 1)}), set-up ${fmt(p(u, 50), 0)} µs (p25-p75 ${fmt(p(u, 25), 0)}-${fmt(p(u, 75), 0)})`,
        );
      }
      const ratio = (m: Map<Side, number[]>) =>
        m.get(sides[1]!)!.map((v, i) => v / m.get(sides[0]!)![i]!);
      const rt = ratio(token);
      const rs = ratio(setup);
      console.log(
        `  this build / baseline, per round: per token median ${fmt(p(rt, 50), 2)} (p25-p75 ${fmt(p(rt, 25), 2)}-${fmt(p(rt, 75), 2)}; target <= 0.5), set-up ${fmt(p(rs, 50), 2)} (p25-p75 ${fmt(p(rs, 25), 2)}-${fmt(p(rs, 75), 2)})`,
      );
    } finally {
      agent.destroy();
      for (const s of sides) {
        if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
        const exited = new Promise((r) => s.proc.once('exit', r));
        s.proc.kill('SIGTERM');
        await exited;
      }
      up.proc.kill('SIGTERM');
    }
  },
};
export default bench;
