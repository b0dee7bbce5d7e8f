// The chaos run's short mode (CI): 20 s of random faults under load, the same targets as
// `npm run chaos` (2 minutes by default). A failure prints the seed to replay it.
import { expect } from 'chai';
import { chaosPassed, formatReport, runChaos } from '../chaos/chaos.js';

describe('chaos (short mode)', function () {
  this.timeout(180_000);

  it("20 s of kill -9, SIGSTOP/SIGCONT, SIGHUP, TTIN/TTOU, Redis restarts and config flips: no failure but a killed worker's own, pool back to SERVICE_WORKERS", async () => {
    // A fixed seed by default, so CI replays one known fault sequence; CHAOS_SEED picks another.
    const seed = Number(process.env.CHAOS_SEED ?? 20261130);
    const lines: string[] = [];
    const r = await runChaos({ durationMs: 20_000, seed, log: (l) => lines.push(l) });
    const text = formatReport(r);
    process.stdout.write(`${text.replace(/^/gm, '      ')}\n`);
    expect(chaosPassed(r), `${text}\n${lines.join('\n')}`).to.equal(true);
    expect(Object.values(r.faults).reduce((a, b) => a + b, 0)).to.be.at.least(4);
  });
});
