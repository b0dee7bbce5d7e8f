import { expect } from 'chai';
import { hostAllowed, parseHostAllowList } from '../../lib/config/host-allow-list.js';
import { SettingsError, validateSettings } from '../../lib/config/settings.js';
import { allowListedLlm, checkMcpHosts } from '../../lib/agent/upstream-hosts.js';
import { AgentError } from '../../lib/agent/errors.js';
import type { LlmStreamer } from '../../lib/agent/llm.js';

describe('AGENT_ALLOWED_UPSTREAM_HOSTS', () => {
  it('empty allows every host', () => {
    expect(parseHostAllowList('')).to.equal(null);
    expect(parseHostAllowList(' , ')).to.equal(null);
    expect(hostAllowed(null, 'http://anything:1/')).to.equal(true);
  });

  it('host, host:port, *.domain[:port], IPv6; compared as the URL parser normalises them', () => {
    const list = parseHostAllowList(
      'LLM.internal, 10.0.0.5:8000, *.models.example.com, *.mcp.example.com:443, [::1]:9000, api.example.com:80',
    );
    const yes = [
      'http://llm.internal/v1',
      'https://LLM.INTERNAL:8443/v1',
      'http://10.0.0.5:8000/v1',
      'http://0x0a.0.0.5:8000/v1', // the same address, written otherwise
      'https://a.models.example.com/v1',
      'https://b.a.models.example.com:1234',
      'https://x.mcp.example.com/mcp',
      'https://x.mcp.example.com:443/mcp',
      'http://[::1]:9000/',
      'http://api.example.com/v1', // :80 is http's default port
    ];
    const no = [
      'http://10.0.0.5:8001/v1',
      'http://10.0.0.6:8000/v1',
      'https://models.example.com/v1', // the wildcard covers subdomains only
      'https://evilmodels.example.com/v1',
      'https://models.example.com.evil.net/v1',
      'http://x.mcp.example.com/mcp', // port 80, not 443
      'http://[::1]:9001/',
      'https://api.example.com/v1', // 443
      'http://llm.internal.evil.net/',
      'http://llm.internal@evil.net/',
      'not a url',
      '',
    ];
    for (const u of yes) expect(hostAllowed(list, u), u).to.equal(true);
    for (const u of no) expect(hostAllowed(list, u), u).to.equal(false);
  });

  it('a bad entry is a configuration error naming the setting', () => {
    for (const bad of ['http://h', 'h/path', 'u@h', '*', '*.', 'h:99999', 'a b', '*x.com']) {
      expect(() => validateSettings({ AGENT_ALLOWED_UPSTREAM_HOSTS: bad }), bad).to.throw(
        SettingsError,
        /invalid setting AGENT_ALLOWED_UPSTREAM_HOSTS/,
      );
    }
    expect(
      validateSettings({ AGENT_ALLOWED_UPSTREAM_HOSTS: ' a.com , *.b.com:8080 ,' })
        .AGENT_ALLOWED_UPSTREAM_HOSTS,
    ).to.equal('a.com,*.b.com:8080');
    expect(validateSettings({}).AGENT_ALLOWED_UPSTREAM_HOSTS).to.equal('');
  });

  it('the LLM is refused with 40303 before the inner client is called; MCP URLs with 40026', async () => {
    let called = 0;
    const inner: LlmStreamer = {
      async *stream() {
        called++;
        yield { content: 'x' };
      },
    };
    const llm = allowListedLlm(inner, parseHostAllowList('ok.example'));
    const model = { domain: 'd', api: 'http://evil.example/v1', key: 'secret-key' };
    try {
      for await (const _ of llm.stream(model, [], new AbortController().signal)) void _;
      expect.fail('no error');
    } catch (err) {
      expect((err as AgentError).code).to.equal(40303);
      expect((err as AgentError).message).to.equal(
        'Model request failed,host evil.example is not allowed',
      );
    }
    expect(called).to.equal(0);
    for await (const _ of llm.stream(
      { ...model, api: 'https://ok.example/v1' },
      [],
      new AbortController().signal,
    ))
      void _;
    expect(called).to.equal(1);
    const ok = () => checkMcpHosts(parseHostAllowList('ok.example'), ['http://ok.example/mcp']);
    expect(ok).not.to.throw();
    expect(() =>
      checkMcpHosts(parseHostAllowList('ok.example'), ['http://ok.example/mcp', 'http://x.y/mcp']),
    ).to.throw(AgentError, 'Failed to get MCP server protocol,MCP server host x.y is not allowed');
  });
});
