// Issue 7 figures: the agent's own overhead per ReAct step. One run of the custom endpoint is a
// 3-step ReAct run — link tool, MCP tool (through the proxy), workflow — then a Final Answer and
// the summariser: 5 LLM completions and 7 plugin calls, every fake answering at once. A run's
// overhead is its end-to-end time minus the time spent inside the fake services' handlers for
// that run (each request is attributed to its run: question, app id, uid, sid or flow id);
// per step = overhead / 3. Sequential runs (1 at a time), then 20 concurrent runs; 2 workers.
// The fakes and the client share the machine (and its cores) with the service.
import http from 'node:http';
import { act, finish, startFakeReactLlm } from '../support/fake-react-llm.js';
import { pluginEnv, startFakePlugins, wfFrame, type FakePlugins } from '../support/fake-plugins.js';
import { startService } from '../support/service.js';
import { WEATHER_OP } from '../support/openapi.js';
import { fmt, percentile, type Bench } from './lib.js';

const MODEL = 'bench-react';
const STEPS = 3;

interface RunResult {
  run: number;
  ms: number;
  sid: string;
  code: number;
  tools: number;
}

function post(
  agent: http.Agent,
  port: number,
  path: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<string> {
  return new Promise((resolve, reject) => {
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
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function oneRun(
  agent: http.Agent,
  port: number,
  fake: FakePlugins,
  llmUrl: string,
  i: number,
): Promise<RunResult> {
  fake.flows.push({
    id: `flow-${i}`,
    name: 'analyse_data',
    description: 'Analyses a data set',
    outputs: [{ name: 'AGENT_USER_INPUT', schema: { type: 'string' }, required: true }],
    frames: [wfFrame('Analysis: fine.'), wfFrame(null, undefined, 'stop')],
  });
  const body = {
    model_config: { domain: MODEL, api: llmUrl, api_key: 'k' },
    instruction: { reasoning: '', answer: '' },
    plugin: {
      tools: [{ tool_id: 'tool@bench', version: 'V1.0' }],
      mcp_server_ids: ['mcp_bench'],
      mcp_server_urls: [],
      workflow_ids: [`flow-${i}`],
      knowledge: [],
    },
    uid: `u-${i}`,
    messages: [{ role: 'user', content: `run-${i}: weather, key and analysis?` }],
    meta_data: { caller: 'workflow-agent-node', caller_sid: '' },
    stream: true,
    max_loop_count: 10,
  };
  const t0 = performance.now();
  const raw = await post(agent, port, '/agent/v1/custom/chat/completions', body, {
    'x-consumer-username': `bench-${i}`,
  });
  const ms = performance.now() - t0;
  const lines = raw.split('\n\n').filter((l) => l.startsWith('data: {'));
  const stop = JSON.parse(lines[lines.length - 1]!.slice(6)) as {
    id: string;
    code: number;
    message: string;
  };
  const tools = lines.filter((l) => l.includes('"tool_calls":[')).length;
  return { run: i, ms, sid: stop.id, code: stop.code, tools };
}

const bench: Bench = {
  title: 'ReAct run (3 tool steps) on the custom endpoint: agent overhead per step, 2 workers',
  async run() {
    const [llm, fake] = await Promise.all([startFakeReactLlm(), startFakePlugins()]);
    llm.script(MODEL, {
      plan: [
        [act('weather first', 'get_weather', { city: 'Hefei', days: 1 })],
        [act('then the key', 'lookup', { key: 'hefei' })],
        [act('then the analysis', 'analyse_data', { AGENT_USER_INPUT: 'weather' })],
        [finish('I have everything')],
      ],
      summary: ['Sunny; key found; analysis fine.'],
      piece: 16,
    });
    fake.linkTools.push({
      id: 'tool@bench',
      version: 'V1.0',
      document: { paths: { '/w': { get: WEATHER_OP } } },
    });
    fake.mcpServers.push({
      server_id: 'mcp_bench',
      server_url: 'http://mcp',
      server_status: 0,
      tools: [
        {
          name: 'lookup',
          description: 'Looks up',
          inputSchema: {
            type: 'object',
            properties: { key: { type: 'string' } },
            required: ['key'],
          },
        },
      ],
    });
    const svc = await startService({
      env: { SERVICE_WORKERS: '2', LLM_MAX_RETRIES: '0', ...pluginEnv(fake) },
    });
    await svc.waitReady();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    let next = 0;

    /** Time inside the fakes for each run, by attribution. */
    function fakeTime(results: RunResult[]): Map<number, number> {
      const byRun = new Map<number, number>();
      const bySid = new Map(results.map((r) => [r.sid, r.run]));
      const add = (run: number | undefined, ms: number) => {
        if (run !== undefined) byRun.set(run, (byRun.get(run) ?? 0) + ms);
      };
      const num = (s: unknown, re: RegExp) => {
        const m = re.exec(String(s ?? ''));
        return m ? Number(m[1]) : undefined;
      };
      for (const c of llm.calls) add(num(c.user, /run-(\d+):/), c.tookMs);
      for (const r of fake.requests) {
        const b = r.body as Record<string, unknown>;
        const run =
          r.path === '/link/versions'
            ? num(r.rawQuery, /app_id=bench-(\d+)/)
            : r.path === '/link/run'
              ? num((b.header as Record<string, unknown> | undefined)?.uid, /u-(\d+)/)
              : r.path === '/workflow/protocol'
                ? num(b.flow_id, /flow-(\d+)/)
                : r.path === '/workflow/v1/chat/completions'
                  ? num(b.uid, /u-(\d+)/)
                  : bySid.get(String(b.sid));
        add(run, r.tookMs);
      }
      return byRun;
    }

    async function phase(
      concurrency: number,
      runs: number,
      maxSeconds: number,
    ): Promise<RunResult[]> {
      const results: RunResult[] = [];
      const deadline = Date.now() + maxSeconds * 1000;
      let left = runs;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (left > 0 && Date.now() < deadline) {
            left--;
            results.push(await oneRun(agent, svc.port, fake, llm.url, next++));
          }
        }),
      );
      return results;
    }

    function report(label: string, results: RunResult[], wallMs: number) {
      const bad = results.filter((r) => r.code !== 0 || r.tools !== STEPS);
      if (bad.length > 0)
        throw new Error(
          `${bad.length} runs failed, e.g. code ${bad[0]!.code}, ${bad[0]!.tools} tool calls`,
        );
      const fakes = fakeTime(results);
      const total = results.map((r) => r.ms);
      const inFakes = results.map((r) => fakes.get(r.run) ?? 0);
      const overhead = results.map((r, i) => r.ms - inFakes[i]!);
      const perStep = overhead.map((o) => o / STEPS);
      const p = (xs: number[], q: number) => fmt(percentile(xs, q), 2);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      console.log(
        `${label}: ${results.length} runs in ${fmt(wallMs / 1000, 1)} s (${fmt((results.length * 1000) / wallMs, 1)} runs/s)`,
      );
      console.log(`  run time (client)        p50 ${p(total, 50)} ms   p99 ${p(total, 99)} ms`);
      console.log(
        `  inside the fakes         mean ${fmt(mean(inFakes), 2)} ms per run (12 requests)`,
      );
      console.log(
        `  agent overhead per run   p50 ${p(overhead, 50)} ms   p99 ${p(overhead, 99)} ms`,
      );
      console.log(`  agent overhead per step  p50 ${p(perStep, 50)} ms   p99 ${p(perStep, 99)} ms`);
    }

    try {
      await phase(4, 40, 20); // warm-up: JIT, connections, lazy imports in both workers
      llm.calls.length = 0;
      fake.requests.length = 0;
      let t = performance.now();
      const seq = await phase(1, Number(process.env.BENCH_REACT_RUNS ?? 300), 20);
      report('1 run at a time', seq, performance.now() - t);
      t = performance.now();
      const conc = await phase(20, Number(process.env.BENCH_REACT_RUNS_C20 ?? 1000), 30);
      report('20 concurrent runs', conc, performance.now() - t);
    } finally {
      agent.destroy();
      await svc.stop();
      await Promise.all([llm.close(), fake.close()]);
    }
  },
};

export default bench;
