import { expect } from 'chai';
import {
  checkWasLate,
  CrashTracker,
  describeExit,
  restartDelay,
  retryDelay,
  RETRY_FLOOR_MS,
  type RestartPolicy,
} from '../../lib/supervisor/policy.js';

const P: RestartPolicy = {
  backoffBaseMs: 100,
  backoffMaxMs: 1000,
  stableMs: 30000,
  budget: 5,
  windowMs: 60000,
};

describe('supervisor policy', () => {
  it('restart delay: at once, then doubling with equal jitter, capped', () => {
    expect(restartDelay(1, P, () => 0.5)).to.equal(0);
    expect(restartDelay(2, P, () => 0)).to.equal(50);
    expect(restartDelay(2, P, () => 1)).to.equal(100);
    expect(restartDelay(3, P, () => 1)).to.equal(200);
    expect(restartDelay(5, P, () => 1)).to.equal(800);
    expect(restartDelay(6, P, () => 1)).to.equal(1000);
    expect(restartDelay(60, P, () => 1)).to.equal(1000);
    expect(restartDelay(60, P, () => 0)).to.equal(500);
  });

  it('crash budget: more than 5 unstable crashes in 60 s exceed it', () => {
    const t = new CrashTracker(P, () => 1);
    const decisions = Array.from({ length: 6 }, (_, i) => t.record(1000 + i * 1000, 500));
    expect(decisions.slice(0, 5).every((d) => !d.budgetExceeded)).to.equal(true);
    expect(decisions[5]!.budgetExceeded).to.equal(true);
    expect(decisions.map((d) => d.streak)).to.deep.equal([1, 2, 3, 4, 5, 6]);
  });

  it('crashes spread beyond the window do not add up', () => {
    const t = new CrashTracker(P, () => 1);
    for (let i = 0; i < 20; i++) expect(t.record(i * 15000, 500).budgetExceeded).to.equal(false);
  });

  it('a stable worker crashing starts a fresh streak and is not counted', () => {
    const t = new CrashTracker(P, () => 1);
    t.record(0, 10);
    t.record(100, 10);
    const d = t.record(200, 60000);
    expect(d.unstable).to.equal(false);
    expect(d.streak).to.equal(1);
    expect(d.delayMs).to.equal(0);
    expect(d.recent).to.equal(2);
  });

  it('a quiet period as long as the stable time resets the streak', () => {
    const t = new CrashTracker(P, () => 1);
    t.record(0, 10);
    expect(t.record(1000, 10).streak).to.equal(2);
    expect(t.record(40000, 10).streak).to.equal(1);
  });

  it('exit reasons', () => {
    expect(describeExit(null, 'SIGKILL')).to.contain('possibly out of memory');
    expect(describeExit(null, 'SIGSEGV')).to.equal('killed by SIGSEGV');
    expect(describeExit(1, null)).to.equal('exited with code 1');
  });

  it('retry delay (forks, recycles): a floor even with base 0, doubling, capped, equal jitter', () => {
    expect(retryDelay(1, { backoffBaseMs: 0, backoffMaxMs: 0 }, () => 1)).to.equal(RETRY_FLOOR_MS);
    expect(retryDelay(1, P, () => 1)).to.equal(250);
    expect(retryDelay(2, P, () => 1)).to.equal(500);
    expect(retryDelay(3, P, () => 0)).to.equal(500);
    expect(retryDelay(10, P, () => 1)).to.equal(1000);
  });

  it('a check that ran much later than its interval means the primary itself was paused', () => {
    expect(checkWasLate(260, 250)).to.equal(false);
    expect(checkWasLate(999, 250)).to.equal(false);
    expect(checkWasLate(1001, 250)).to.equal(true);
    expect(checkWasLate(3000, 1000)).to.equal(false);
    expect(checkWasLate(4001, 1000)).to.equal(true);
  });
});
