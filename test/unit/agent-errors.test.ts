import { expect } from 'chai';
import { AgentError, CODES } from '../../lib/agent/errors.js';
import { SidGenerator } from '../../lib/agent/sid.js';
import { detectLocalIp } from '../../lib/telemetry/host.js';

describe('agent errors (spec 5.1, 2.2)', () => {
  it('carries the declared code and text', () => {
    const e = new AgentError(CODES.BOT_CONFIG_EXISTS);
    expect([e.code, e.message]).to.deep.equal([40053, 'bot config already exists, cannot create']);
    expect(CODES.BOT_CONFIG_NOT_FOUND).to.deep.equal({
      code: 40001,
      message: 'failed to retrieve bot config',
    });
    expect(CODES.REDIS_PING.code).to.equal(40041);
    expect(CODES.BOT_CONFIG_DELETE).to.deep.equal({
      code: 40051,
      message: 'failed to delete bot config',
    });
    expect(CODES.INTERNAL).to.deep.equal({ code: 40500, message: 'Agent internal service error' });
    expect(CODES.TIMEOUT.code).to.equal(-1);
  });

  it('a detail is appended as "<text>,<detail>" on a fresh copy; the sid likewise (no D3 accumulation)', () => {
    const base = new AgentError(CODES.INTERNAL);
    const a = base.withDetail('Request timed out.');
    expect(a.message).to.equal('Agent internal service error,Request timed out.');
    expect(a.messageWithSid('sid1')).to.equal(
      'Agent internal service error,Request timed out.,sid1',
    );
    expect(a.messageWithSid('sid2')).to.equal(
      'Agent internal service error,Request timed out.,sid2',
    );
    expect(base.message).to.equal('Agent internal service error');
    expect(a).to.be.instanceOf(Error);
  });
});

describe('sid (spec 11.1)', () => {
  it('reproduces the example of the spec', () => {
    const g = new SidGenerator({
      sub: 'sag',
      location: 'hf',
      port: 17870,
      ip: '192.168.10.23',
      pid: 1234,
      now: () => 1727452800123,
    });
    expect(g.next()).to.equal('sag00d20000@hf1923435e47b0a17172');
  });

  it('counts in the index field (unique within a millisecond), wrapping at 16 bits', () => {
    const g = new SidGenerator({
      sub: 'svc',
      location: 'src',
      port: 17870,
      ip: '10.0.0.1',
      pid: 1,
      now: () => 1000,
    });
    const ids = Array.from({ length: 3 }, () => g.next());
    expect(new Set(ids).size).to.equal(3);
    expect(ids.map((s) => s.slice(7, 11))).to.deep.equal(['0000', '0001', '0002']);
    for (let i = 3; i < 0x10000; i++) g.next();
    expect(g.next().slice(7, 11)).to.equal('0000');
    expect(ids[0]).to.equal('svc00010000@src000000003e80001172');
  });

  it('detects a local IPv4 address', async () => {
    expect(await detectLocalIp()).to.match(/^\d+\.\d+\.\d+\.\d+$/);
  });
});
