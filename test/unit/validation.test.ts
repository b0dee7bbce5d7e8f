import { expect } from 'chai';
import { validationBody } from '../../lib/agent/chunks.js';
import { BodyDecodeError, isJsonContentType, validateBody } from '../../lib/http/body.js';
import { MAX_JSON_DEPTH, parseJson } from '../../lib/schema/json.js';
import {
  bool,
  codePointLength,
  float,
  formatIssue,
  int,
  list,
  literal,
  model,
  nullable,
  optional,
  RequestValidationError,
  str,
  validateParams,
  type Schema,
} from '../../lib/schema/schema.js';

/** The "type, loc, msg" message a schema gives for an input, or 'ok'. */
function msg<T>(schema: Schema<T>, input: unknown, loc: (string | number)[] = ['body']): string {
  try {
    schema.check(input, loc);
    return 'ok';
  } catch (err) {
    if (err instanceof RequestValidationError) return err.message;
    throw err;
  }
}

describe('validation: pydantic vocabulary', () => {
  it('formats "type, last loc element, msg"', () => {
    expect(
      formatIssue({
        type: 'missing',
        loc: ['header', 'x-consumer-username'],
        msg: 'Field required',
      }),
    ).to.equal('missing, x-consumer-username, Field required');
    expect(
      formatIssue({ type: 'json_invalid', loc: ['body', 12], msg: 'JSON decode error' }),
    ).to.equal('json_invalid, 12, JSON decode error');
  });

  it('str: type and length limits in code points, singular/plural texts', () => {
    const s = str({ minLength: 1, maxLength: 3 });
    expect(msg(s, 'abc')).to.equal('ok');
    expect(msg(s, '😀😀😀')).to.equal('ok'); // 3 code points, 6 UTF-16 units
    expect(msg(s, '', ['body', 'bot_id'])).to.equal(
      'string_too_short, bot_id, String should have at least 1 character',
    );
    expect(msg(s, 'abcd', ['body', 'uid'])).to.equal(
      'string_too_long, uid, String should have at most 3 characters',
    );
    expect(msg(str({ minLength: 2 }), 'a')).to.equal(
      'string_too_short, body, String should have at least 2 characters',
    );
    for (const bad of [5, true, null, [], {}])
      expect(msg(s, bad)).to.equal('string_type, body, Input should be a valid string');
    expect(codePointLength('a😀b')).to.equal(3);
  });

  it('int: lax conversions and the error types', () => {
    const i = int({ ge: 1, le: 5 });
    expect(i.check('3', [])).to.equal(3);
    expect(i.check(4.0, [])).to.equal(4);
    expect(i.check(true, [])).to.equal(1);
    expect(msg(i, 9, ['body', 'top_k'])).to.equal(
      'less_than_equal, top_k, Input should be less than or equal to 5',
    );
    expect(msg(i, 0)).to.equal(
      'greater_than_equal, body, Input should be greater than or equal to 1',
    );
    expect(msg(i, 2.5)).to.equal(
      'int_from_float, body, Input should be a valid integer, got a number with a fractional part',
    );
    expect(msg(i, 'x')).to.equal(
      'int_parsing, body, Input should be a valid integer, unable to parse string as an integer',
    );
    expect(msg(i, null)).to.equal('int_type, body, Input should be a valid integer');
    expect(msg(i, Infinity)).to.equal('finite_number, body, Input should be a finite number');
  });

  it('float: numbers, numeric strings and booleans; float bounds print like Python', () => {
    const f = float({ le: 1 });
    expect(f.check('0.5', [])).to.equal(0.5);
    expect(f.check(1, [])).to.equal(1);
    expect(f.check(' 1e-1 ', [])).to.equal(0.1);
    expect(msg(f, 'abc')).to.equal(
      'float_parsing, body, Input should be a valid number, unable to parse string as a number',
    );
    expect(msg(f, [])).to.equal('float_type, body, Input should be a valid number');
    expect(msg(f, 2)).to.equal('less_than_equal, body, Input should be less than or equal to 1.0');
  });

  it('bool: the lax words and numbers', () => {
    const b = bool();
    expect([
      b.check('yes', []),
      b.check('off', []),
      b.check(1, []),
      b.check(0, []),
      b.check(true, []),
    ]).to.deep.equal([true, false, true, false, true]);
    expect(msg(b, 2)).to.equal(
      'bool_parsing, body, Input should be a valid boolean, unable to interpret input',
    );
    expect(msg(b, 'maybe')).to.equal(
      'bool_parsing, body, Input should be a valid boolean, unable to interpret input',
    );
    expect(msg(b, null)).to.equal('bool_type, body, Input should be a valid boolean');
  });

  it('list: type, item location by index, length', () => {
    const l = list(str(), { minLength: 1 });
    expect(msg(l, 'x')).to.equal('list_type, body, Input should be a valid list');
    expect(msg(l, ['a', 3], ['body', 'tool_ids'])).to.equal(
      'string_type, 1, Input should be a valid string',
    );
    expect(msg(l, [], ['body', 'messages'])).to.equal(
      'too_short, messages, List should have at least 1 item after validation, not 0',
    );
  });

  it('literal and nullable', () => {
    expect(msg(literal('user', 'assistant'), 'system', ['body', 'role'])).to.equal(
      "literal_error, role, Input should be 'user' or 'assistant'",
    );
    expect(msg(literal('a', 'b', 'c'), 'x')).to.equal(
      "literal_error, body, Input should be 'a', 'b' or 'c'",
    );
    expect(nullable(str()).check(null, [])).to.equal(null);
    expect(msg(nullable(str()), 1)).to.equal('string_type, body, Input should be a valid string');
  });

  it('model: declaration order, first issue wins, defaults, extra handling, non-objects', () => {
    const inner = model({ n: optional(int(), () => 7) });
    const m = model({ a: str(), b: int(), inner: optional(inner, () => ({ n: 7 })) });
    expect(msg(m, {})).to.equal('missing, a, Field required');
    expect(msg(m, { a: 1 })).to.equal('string_type, a, Input should be a valid string'); // a before b's missing
    expect(msg(m, { a: 'x' })).to.equal('missing, b, Field required');
    expect(msg(m, { a: 'x', b: 1, inner: { n: 'z' } })).to.equal(
      'int_parsing, n, Input should be a valid integer, unable to parse string as an integer',
    );
    expect(m.check({ a: 'x', b: '2', junk: 1 }, [])).to.deep.equal({
      a: 'x',
      b: 2,
      inner: { n: 7 },
    }); // ignore extras
    expect(model({ a: str() }, { extra: 'allow' }).check({ a: 'x', z: [1] }, [])).to.deep.equal({
      a: 'x',
      z: [1],
    });
    expect(msg(model({ a: str() }, { extra: 'forbid' }), { a: 'x', z: 1 })).to.equal(
      'extra_forbidden, z, Extra inputs are not permitted',
    );
    for (const bad of [null, [], 'x', 3, Buffer.from('{}')]) {
      expect(msg(m, bad)).to.equal(
        'model_attributes_type, body, Input should be a valid dictionary or object to extract fields from',
      );
    }
    expect(msg(m, { a: 'x', b: 1, inner: null })).to.equal(
      'model_attributes_type, inner, Input should be a valid dictionary or object to extract fields from',
    );
  });

  it('never lets a "__proto__" key change a prototype', () => {
    const parsed = parseJson('{"__proto__": {"polluted": true}, "a": "x"}') as Record<
      string,
      unknown
    >;
    const out = model({ a: str() }, { extra: 'allow' }).check(parsed, []);
    expect(Object.getPrototypeOf(out)).to.equal(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    expect(Object.hasOwn(out, '__proto__')).to.equal(true);
  });
});

describe('validation: JSON as Python reads it', () => {
  const offset = (text: string) => {
    try {
      parseJson(text);
      return 'ok';
    } catch (err) {
      return (err as RequestValidationError).issue.loc[1];
    }
  };

  it("reports Python's character offsets", () => {
    expect(offset('{"a":')).to.equal(5); // Expecting value
    expect(offset('{bad')).to.equal(1); // Expecting property name
    expect(offset('abc')).to.equal(0);
    expect(offset('{"a":1}x')).to.equal(7); // Extra data
    expect(offset('{"a" 1}')).to.equal(5); // Expecting ':'
    expect(offset('[1 2]')).to.equal(3); // Expecting ','
    expect(offset('{"a":"x')).to.equal(5); // Unterminated string starting at
    expect(offset('  ')).to.equal(2);
    expect(offset('{"a":1,}')).to.equal(7);
    expect(offset('{"é😀":x}')).to.equal(6); // code points, not UTF-16 units
    expect(offset('{"a":"\\q"}')).to.equal(6); // Invalid \escape
    expect(offset('{"a":"\u0001"}')).to.equal(6); // Invalid control character
  });

  it(`nesting deeper than MAX_JSON_DEPTH (${MAX_JSON_DEPTH}) is json_invalid at the bracket past it, valid or not, at any depth`, () => {
    const issue = (text: string) => {
      try {
        parseJson(text);
        return 'ok';
      } catch (err) {
        if (!(err instanceof RequestValidationError)) throw err;
        return err.message;
      }
    };
    const past = `json_invalid, ${MAX_JSON_DEPTH}, JSON decode error`;
    for (const depth of [MAX_JSON_DEPTH + 1, 1000, 5000, 100_000]) {
      expect(issue('['.repeat(depth)), `[ x ${depth}`).to.equal(past);
      expect(issue('['.repeat(depth) + ']'.repeat(depth)), `[] x ${depth}`).to.equal(past);
      expect(issue('{"a":'.repeat(depth)), `{"a": x ${depth}`).to.equal(
        `json_invalid, ${5 * MAX_JSON_DEPTH}, JSON decode error`,
      );
      expect(issue('{"a":'.repeat(depth) + '1' + '}'.repeat(depth))).to.equal(
        `json_invalid, ${5 * MAX_JSON_DEPTH}, JSON decode error`,
      );
      // NaN sends a valid-for-Python body through the fallback parser
      expect(issue('['.repeat(depth) + 'NaN' + ']'.repeat(depth))).to.equal(past);
    }
    // An earlier syntax error is reported first, as a parser reading in order would.
    expect(issue('[x' + '['.repeat(5000))).to.equal('json_invalid, 1, JSON decode error');
    // Brackets inside strings do not nest.
    const inString = JSON.stringify({ a: '['.repeat(5000), b: '{'.repeat(5000) });
    expect(issue(inString)).to.equal('ok');
    expect(issue(JSON.stringify(['\\', '\\"[{'.repeat(3000), [[[]]]]))).to.equal('ok');
    // Up to the limit everything parses, with either parser.
    const deepest = '['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH);
    expect(issue(deepest)).to.equal('ok');
    expect(issue('['.repeat(MAX_JSON_DEPTH) + 'NaN' + ']'.repeat(MAX_JSON_DEPTH))).to.equal('ok');
    // Many brackets side by side are not depth.
    expect(issue(JSON.stringify(Array.from({ length: 5000 }, () => ({ a: [1] }))))).to.equal('ok');
  });

  it('accepts what Python accepts', () => {
    expect(parseJson('{"a": NaN, "b": -Infinity, "c": [1, 2.5e1, "\\u00e9"]}')).to.deep.equal({
      a: NaN,
      b: -Infinity,
      c: [1, 25, 'é'],
    });
  });
});

describe('validation: request parts', () => {
  const s = model({ app_id: str({ minLength: 1 }) });

  it('JSON is read without a Content-Type and for application/json or +json', () => {
    expect(isJsonContentType(undefined)).to.equal(true);
    expect(isJsonContentType('application/json; charset=utf-8')).to.equal(true);
    expect(isJsonContentType('Application/Vnd.Api+JSON')).to.equal(true);
    for (const ct of [
      'text/plain',
      'text/json',
      'application',
      'multipart/form-data; boundary=x',
      'application/x-json-stream',
    ]) {
      expect(isJsonContentType(ct), ct).to.equal(false);
    }
  });

  it('body: missing, null, bytes under another content type, malformed JSON, bad UTF-8', () => {
    const m = (body: Buffer | undefined, ct?: string) => {
      try {
        validateBody(s, body, ct);
        return 'ok';
      } catch (err) {
        return err instanceof BodyDecodeError ? `HTTP ${err.status}` : (err as Error).message;
      }
    };
    expect(m(undefined)).to.equal('missing, body, Field required');
    expect(m(Buffer.alloc(0), 'application/json')).to.equal('missing, body, Field required');
    expect(m(Buffer.from('null'))).to.equal('missing, body, Field required');
    expect(m(Buffer.from('{"app_id":"x"}'), 'text/plain')).to.equal(
      'model_attributes_type, body, Input should be a valid dictionary or object to extract fields from',
    );
    expect(m(Buffer.from('{"app_id":'))).to.equal('json_invalid, 10, JSON decode error');
    expect(m(Buffer.from([0x7b, 0xff, 0x7d]))).to.equal('HTTP 400');
    expect(
      m(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"app_id":"x"}')])),
    ).to.equal('ok'); // BOM
  });

  it('params: the last value of a name counts; issues located at [source, name]', () => {
    const q = model({ app_id: str({ minLength: 1 }), bot_id: str() });
    expect(
      validateParams(q, 'query', new URLSearchParams('app_id=a&bot_id=b&app_id=c')),
    ).to.deep.equal({ app_id: 'c', bot_id: 'b' });
    expect(() => validateParams(q, 'query', new URLSearchParams('bot_id=b'))).to.throw(
      'missing, app_id, Field required',
    );
    const h = model({ 'x-consumer-username': str() });
    expect(() => validateParams(h, 'header', [])).to.throw(
      'missing, x-consumer-username, Field required',
    );
    expect(validateParams(h, 'header', [['X-Consumer-Username', 'u']])).to.deep.equal({
      'x-consumer-username': 'u',
    });
  });

  it('the 40002 body of spec 3.4', () => {
    const err = new RequestValidationError({
      type: 'missing',
      loc: ['body', 'bot_id'],
      msg: 'Field required',
    });
    expect(validationBody(err, 'sid-1', 1727452800999)).to.deep.equal({
      id: 'sid-1',
      choices: [],
      created: 1727452800,
      model: '',
      object: 'chat.completion.chunk',
      service_tier: null,
      system_fingerprint: null,
      usage: null,
      code: 40002,
      message: 'missing, bot_id, Field required',
      logs: [],
      knowledge_metadata: [],
    });
  });
});
