import { expect } from 'chai';
import { Writable } from 'node:stream';
import winston from 'winston';
import { createLogger } from '../../lib/telemetry/logger.js';
import { redact, redactString } from '../../lib/telemetry/redact.js';

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
    const logger = createLogger({ role: 'worker', workerId: 7, format: 'json' });
    logger.clear();
    logger.add(
      new winston.transports.Stream({
        stream: new Writable({
          write(chunk, _enc, cb) {
            lines.push(String(chunk));
            cb();
          },
        }),
      }),
    );
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
});
