import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, request, ROOT, runCli, startService, tempDir } from '../support/service.js';

describe('CLI and configuration', function () {
  it('--help, version and unknown commands', async () => {
    const help = await runCli({ args: ['--help'] });
    expect(help.code).to.equal(0);
    for (const word of [
      'start',
      'config',
      'health',
      'version',
      '--config',
      '--workers',
      '--port',
    ]) {
      expect(help.stdout).to.contain(word);
    }
    const v = await runCli({ args: ['version'] });
    expect(v.code).to.equal(0);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(v.stdout.trim()).to.equal(pkg.version);
    const bad = await runCli({ args: ['frobnicate'] });
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.contain("unknown command 'frobnicate'");
  });

  it('config: the environment beats the file, the file beats defaults; secrets and bad lines', async () => {
    const r = await runCli({
      args: ['config'],
      env: { SERVICE_WORKERS: '3', LOG_LEVEL: 'debug' },
      configText:
        'SERVICE_WORKERS=2\nSERVICE_NAME="quoted name"\n# comment\n\nTHIS LINE IS BROKEN\nLOG_LEVEL=warn\n',
    });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/SERVICE_WORKERS\s+= 3\s+\[env\]/);
    expect(r.stdout).to.match(/LOG_LEVEL\s+= debug\s+\[env\]/);
    expect(r.stdout).to.match(/SERVICE_NAME\s+= quoted name\s+\[file\]/);
    expect(r.stdout).to.match(/SERVICE_GRACEFUL_TIMEOUT\s+= 30000\s+\[default\]/);
    expect(r.stdout).to.match(/line 5 format error/);
  });

  it('--port and --workers win over the environment', async () => {
    const r = await runCli({
      args: ['config', '--port', '18123', '--workers', '2'],
      env: { SERVICE_WORKERS: '5' },
    });
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/SERVICE_PORT\s+= 18123\s+\[cli\]/);
    expect(r.stdout).to.match(/SERVICE_WORKERS\s+= 2\s+\[cli\]/);
  });

  it('a missing config file is a notice; --config points elsewhere', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'other.env'), 'SERVICE_NAME=from-other\n');
    const r = await runCli({ args: ['config', '--config', join(dir, 'other.env')] });
    expect(r.stdout).to.match(/SERVICE_NAME\s+= from-other\s+\[file\]/);
    const missing = await runCli({
      args: ['config'],
      env: { AGENT_CONFIG_FILE: join(dir, 'nope.env') },
    });
    expect(missing.code).to.equal(0);
    expect(missing.stdout).to.contain('not found');
  });

  it('invalid SERVICE_PORT and SERVICE_WORKERS: exit 2 before any fork, one line each, naming them', async () => {
    const r = await runCli({
      env: { SERVICE_PORT: 'eighty', SERVICE_WORKERS: '0', SERVICE_WS_PING_INTERVAL: 'soon' },
    });
    expect(r.code).to.equal(2);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('invalid setting'));
    expect(lines).to.have.length(3);
    expect(r.stderr).to.match(/invalid setting SERVICE_PORT: expected a TCP port/);
    expect(r.stderr).to.match(
      /invalid setting SERVICE_WORKERS: expected an integer from 1 to 1024, or auto/,
    );
    expect(r.stderr).to.match(/invalid setting SERVICE_WS_PING_INTERVAL/);
    expect(r.svc.logs.filter((l) => l.message === 'worker ready')).to.have.length(0);
  });

  it('never prints a secret value, even when it is invalid or malformed', async () => {
    const secret = 'hunter2-PLANTED-SECRET';
    const r = await runCli({
      args: ['config'],
      env: { MY_API_TOKEN: secret },
      configText: `SERVICE_NAME=x\n${secret}\nDB_URL=mysql://root:${secret}@db:3306/agent\n`,
    });
    expect(r.code).to.equal(0);
    expect(r.stdout + r.stderr).not.to.contain(secret);
    const start = await runCli({
      env: { SERVICE_PORT: '99999', SERVICE_WORKERS: 'x', MYSQL_PASSWORD: secret },
      configText: `${secret}\n`,
    });
    expect(start.code).to.equal(2);
    expect(start.stdout + start.stderr).not.to.contain(secret);
  });

  it('secret settings are masked in `config` and in the start banner of a running service', async () => {
    const secret = 'PLANTED-secret-value-42';
    const env = { APP_AUTH_SECRET: secret, APP_AUTH_API_KEY: secret, REDIS_PASSWORD: secret };
    const cfg = await runCli({ args: ['config'], env });
    expect(cfg.code).to.equal(0);
    expect(cfg.stdout).to.match(/APP_AUTH_SECRET\s+= \*\*\*/);
    expect(cfg.stdout + cfg.stderr).not.to.contain(secret);
    const svc = await startService({ env });
    try {
      await svc.waitReady();
      expect(svc.logs.some((l) => typeof l.settings === 'object')).to.equal(true);
    } finally {
      await svc.stop();
    }
    expect(svc.output).not.to.contain(secret);
  });

  it('credentials in the query string of a URL setting are masked in `config` and in the start banner', async () => {
    const secret = 'PLANTED-query-token-7';
    const env = {
      LIST_MCP_PLUGIN_URL: `http://127.0.0.1:9/mcp/list?token=${secret}&region=cn`,
      RUN_MCP_PLUGIN_URL: `http://127.0.0.1:9/mcp/run?access_token=${secret}`,
      CHUNK_QUERY_URL: `http://127.0.0.1:9/chunk?X-Api-Key=${secret}`,
      VERSIONS_LINK_URL: `http://u:${secret}@127.0.0.1:9/versions?Signature=${secret}`,
    };
    const cfg = await runCli({ args: ['config'], env });
    expect(cfg.code).to.equal(0);
    expect(cfg.stdout).to.match(
      /LIST_MCP_PLUGIN_URL\s+= http:\/\/127\.0\.0\.1:9\/mcp\/list\?token=\*\*\*&region=cn /,
    );
    expect(cfg.stdout).to.contain('CHUNK_QUERY_URL');
    expect(cfg.stdout).to.contain('?X-Api-Key=***');
    expect(cfg.stdout).to.contain('http://u:***@127.0.0.1:9/versions?Signature=***');
    expect(cfg.stdout + cfg.stderr).not.to.contain(secret);
    const svc = await startService({ env });
    try {
      await svc.waitReady();
      expect(svc.logs.some((l) => typeof l.settings === 'object')).to.equal(true);
    } finally {
      await svc.stop();
    }
    expect(svc.output).not.to.contain(secret);
  });

  it('SERVICE_WORKERS=auto is accepted', async () => {
    const r = await runCli({ args: ['config'], env: { SERVICE_WORKERS: 'auto' } });
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/SERVICE_WORKERS\s+= [1-9]\d*\s+\[env\]/);
  });

  it('health: 0 against a running service, 1 when nothing answers', async () => {
    const port = await freePort();
    const down = await runCli({
      args: ['health', '--timeout', '500'],
      env: { SERVICE_PORT: String(port) },
    });
    expect(down.code).to.equal(1);
    const svc = await startService({ env: { SERVICE_PORT: String(port) } });
    try {
      await svc.waitReady();
      const up = await runCli({ args: ['health'], env: { SERVICE_PORT: String(port) } });
      expect(up.code, up.stderr).to.equal(0);
      const res = await request(port, '/health');
      expect(res.status).to.equal(200);
      const body = JSON.parse(res.body);
      expect(body).to.include({ status: 'ok' });
      expect(body).to.have.keys('status', 'worker', 'pid', 'uptime');
    } finally {
      await svc.stop();
    }
  });
});
