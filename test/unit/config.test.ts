import { expect } from 'chai';
import { parseDotenv, unquote } from '../../lib/config/dotenv.js';
import { SETTING_NAMES, SettingsError, validateSettings } from '../../lib/config/settings.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../support/service.js';

describe('config.env parsing (original rules)', () => {
  it('skips blanks and comments, splits at the first =, trims, reports lines without =', () => {
    const { values, problems } = parseDotenv(
      '# c\n\n  A = 1 \nB=x=y\n  # indented comment\nBROKEN\nC=\nD = "quoted value" \nE=\'single\'\nF="unbalanced\n',
    );
    expect(Object.fromEntries(values)).to.deep.equal({
      A: '1',
      B: 'x=y',
      C: '',
      D: 'quoted value',
      E: 'single',
      F: '"unbalanced',
    });
    expect(problems).to.deep.equal([{ line: 6, text: 'BROKEN' }]);
  });

  it('strips exactly one pair of matching quotes', () => {
    expect(unquote('""a""')).to.equal('"a"');
    expect(unquote(`'a"`)).to.equal(`'a"`);
    expect(unquote('"')).to.equal('"');
  });
});

describe('settings validation', () => {
  it('types and defaults', () => {
    const s = validateSettings({
      SERVICE_PORT: '8080',
      SERVICE_RELOAD: 'on',
      SERVICE_WS_PING_INTERVAL: 'false',
    });
    expect(s.SERVICE_PORT).to.equal(8080);
    expect(s.SERVICE_RELOAD).to.equal(true);
    expect(s.SERVICE_WS_PING_INTERVAL).to.equal(0);
    expect(s.SERVICE_GRACEFUL_TIMEOUT).to.equal(30000);
    expect(s.SERVICE_WORKERS).to.equal(1);
  });

  it('booleans accept true/false/1/0/yes/no/on/off and nothing else', () => {
    for (const [v, want] of [
      ['true', true],
      ['1', true],
      ['YES', true],
      ['on', true],
      ['false', false],
      ['0', false],
      ['no', false],
      ['Off', false],
    ] as const) {
      expect(validateSettings({ SERVICE_RELOAD: v }).SERVICE_RELOAD).to.equal(want);
    }
    expect(() => validateSettings({ SERVICE_RELOAD: 'maybe' })).to.throw(
      SettingsError,
      /SERVICE_RELOAD: expected a boolean/,
    );
  });

  it('one line per bad variable', () => {
    try {
      validateSettings({
        SERVICE_PORT: '70000',
        SERVICE_WORKERS: '-1',
        LOG_LEVEL: 'loud',
        SERVICE_GRACEFUL_TIMEOUT: '1.5',
      });
      expect.fail('should throw');
    } catch (err) {
      expect(err).to.be.instanceOf(SettingsError);
      const problems = (err as SettingsError).problems;
      expect(problems).to.have.length(4);
      expect(problems.join('\n')).to.match(
        /SERVICE_PORT.*SERVICE_WORKERS|SERVICE_WORKERS.*SERVICE_PORT/s,
      );
    }
  });

  it('config.env.example documents every setting', () => {
    const example = readFileSync(join(ROOT, 'config.env.example'), 'utf8');
    const documented = new Set(parseDotenv(example).values.keys());
    const missing = SETTING_NAMES.filter((n) => !documented.has(n));
    expect(missing, `undocumented: ${missing.join(', ')}`).to.deep.equal([]);
    // ...and the example itself is valid.
    expect(() => validateSettings(Object.fromEntries(parseDotenv(example).values))).not.to.throw();
  });
});
