import { expect } from 'chai';
import { createLogger } from '../../lib/telemetry/logger.js';
import { AgentError, CODES } from '../../lib/agent/errors.js';
import { isCredentialParam, redact, redactString } from '../../lib/telemetry/redact.js';

describe('redaction', () => {
  it('masks secret-looking keys and URL credentials on a copy, never mutating the input', () => {
    const input = {
      MYSQL_PASSWORD: 'pw1',
      nested: { api_key: 'k', apiToken: 't', sk: 's', other: 'fine', url: 'redis://:pw2@h:6379/0' },
      list: [{ client_secret: 'x' }, 'mysql://root:pw3@db/agent'],
      empty: { PASSWORD: '' },
    };
    const before = JSON.stringify(input);
    const out = redact(input) as typeof input;
    expect(JSON.stringify(input)).to.equal(before);
    expect(out.MYSQL_PASSWORD).to.equal('***');
    expect(out.nested).to.deep.equal({
      api_key: '***',
      apiToken: '***',
      sk: '***',
      other: 'fine',
      url: 'redis://:***@h:6379/0',
    });
    expect(out.list).to.deep.equal([{ client_secret: '***' }, 'mysql://root:***@db/agent']);
    expect(out.empty.PASSWORD).to.equal('');
  });

  it('handles cycles and errors', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a.self = a;
    expect((redact(a) as Record<string, unknown>).self).to.equal('[Circular]');
    const e = redact(new Error('connect to http://u:p@x failed')) as { message: string };
    expect(e.message).to.equal('connect to http://u:***@x failed');
    expect(redactString('no creds http://host/path')).to.equal('no creds http://host/path');
  });

  it('the logger writes JSON lines with role, worker_id and pid, redacted', () => {
    const lines: string[] = [];
    const logger = createLogger({
      role: 'worker',
      workerId: 7,
      format: 'json',
      write: (line) => lines.push(line),
    });
    const meta = { settings: { REDIS_PASSWORD: 'secret-value' } };
    logger.info('hello', meta);
    expect(meta.settings.REDIS_PASSWORD).to.equal('secret-value');
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(line).to.include({
      role: 'worker',
      worker_id: 7,
      pid: process.pid,
      message: 'hello',
      level: 'info',
    });
    expect(line.settings).to.deep.equal({ REDIS_PASSWORD: '***' });
  });

  it('a line below the level is dropped before its meta is read (no copy, no serialisation)', () => {
    const lines: string[] = [];
    const logger = createLogger({ role: 'cli', level: 'info', write: (l) => lines.push(l) });
    let touched = 0;
    const meta = {
      get big() {
        touched++;
        return 'x';
      },
      toJSON() {
        touched++;
        return {};
      },
    };
    logger.debug('not written', meta);
    logger.log('debug', 'not written either', meta);
    expect(touched).to.equal(0);
    expect(lines).to.deep.equal([]);
    expect(logger.isLevelEnabled('debug')).to.equal(false);
    logger.info('written', { a: 1 });
    expect(lines).to.have.length(1);
  });

  it('masks credentials in query strings (and fragments), whatever the case; other parameters stay', () => {
    const cases: Array<[string, string]> = [
      ['http://mcp:8080/sse?token=abc123', 'http://mcp:8080/sse?token=***'],
      ['https://h/x?a=1&Access_Token=t0k&b=2', 'https://h/x?a=1&Access_Token=***&b=2'],
      [
        'https://h/x?key=K&sk=S&api_key=A&apikey=B',
        'https://h/x?key=***&sk=***&api_key=***&apikey=***',
      ],
      [
        'https://h/x?SIGNATURE=s&secret=z&password=p&auth=q',
        'https://h/x?SIGNATURE=***&secret=***&password=***&auth=***',
      ],
      [
        'https://b.s3.amazonaws.com/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff&X-Amz-Expires=60',
        'https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60',
      ],
      ['https://app/cb#access_token=xyz&state=1', 'https://app/cb#access_token=***&state=1'],
      ['https://u:pw@h/p?token=t', 'https://u:***@h/p?token=***'],
      // in an upstream message, comma-joined the way the service writes its messages
      [
        'MCP server http://10.0.0.5/sse?apiKey=k1,connect ECONNREFUSED,sid',
        'MCP server http://10.0.0.5/sse?apiKey=***,connect ECONNREFUSED,sid',
      ],
      ['"http://h/?q=weather&page=2&token="', '"http://h/?q=weather&page=2&token="'],
      ['a plain sentence: x=1 and key=value', 'a plain sentence: x=1 and key=value'],
    ];
    for (const [input, want] of cases) expect(redactString(input), input).to.equal(want);
    for (const n of ['token', 'TOKEN', 'id_token', 'x-api-key', 'AccessKeyId', 'client_secret'])
      expect(isCredentialParam(n), n).to.equal(true);
    for (const n of ['q', 'page', 'state', 'app_id', 'tool_ids', 'author', 'skip', 'signal'])
      expect(isCredentialParam(n), n).to.equal(false);
  });

  it('masks them in objects and errors that are logged, and in the messages a client gets', () => {
    const out = redact({
      url: 'http://h/?token=abc',
      err: new Error('GET http://h/?sig=s failed'),
    });
    expect(out).to.deep.equal({
      url: 'http://h/?token=***',
      err: {
        name: 'Error',
        message: 'GET http://h/?sig=*** failed',
        stack: (out as { err: { stack: string } }).err.stack,
      },
    });
    expect((out as { err: { stack: string } }).err.stack).not.to.contain('sig=s ');
    const e = new AgentError(CODES.MCP_PROTOCOL, 'MCP server http://m/sse?token=planted: 401');
    expect(e.message).to.equal(
      'Failed to get MCP server protocol,MCP server http://m/sse?token=***: 401',
    );
    expect(e.detail).not.to.contain('planted');
  });
});
