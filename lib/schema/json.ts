// The Python-compatible JSON parser: what FastAPI's json.loads accepts and where it reports a
// syntax error. Only the error path and NaN/Infinity need it; JSON.parse does the rest.
import { setOwn } from './object.js';
import { codePointLength, fail, type LocItem } from './schema.js';

/**
 * The deepest nesting of arrays and objects a JSON text may have: pydantic's own parser (jiter)
 * stops at 200 levels, serde_json at 128. Deeper is `json_invalid` at the offset of the first
 * bracket past the limit. The original (Python's json under FastAPI) answers HTTP 400 "There was
 * an error parsing the body" once its recursion limit (~1000 frames) is hit; here it is the usual
 * 40002 body. The limit is what keeps every recursive walk of a request value (the schemas, the
 * Python-style dumps, the stores) far from the stack's end.
 */
export const MAX_JSON_DEPTH = 200;

/**
 * Parses JSON as Python's json.loads does (it also accepts NaN, Infinity and -Infinity); a
 * syntax error, or nesting deeper than MAX_JSON_DEPTH, throws `json_invalid` located at Python's
 * character offset, as FastAPI reports it: `json_invalid, <offset>, JSON decode error`.
 */
export function parseJson(text: string, loc: readonly LocItem[] = ['body']): unknown {
  // Too deep: the fallback parser reports the first error in reading order (depth or syntax).
  if (!exceedsJsonDepth(text)) {
    try {
      return JSON.parse(text);
    } catch {
      /* the fallback parser finds the offset */
    }
  }
  return new PyJsonParser(text, loc).parseDocument();
}

/**
 * JSON.parse for JSON from upstreams (an LLM's action input, a plugin's answer): nesting deeper
 * than MAX_JSON_DEPTH is a SyntaxError like any malformed text, so no value that reaches the
 * recursive walks (Python-style dumps, JSON.stringify) can exhaust the stack.
 */
export function parseBoundedJson(text: string): unknown {
  if (exceedsJsonDepth(text))
    throw new SyntaxError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  return JSON.parse(text);
}

const OPEN_SQUARE = 0x5b;
const OPEN_CURLY = 0x7b;
const CLOSE_SQUARE = 0x5d;
const CLOSE_CURLY = 0x7d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Fewer opening brackets than the limit cannot nest past it; counted with native indexOf. */
function fewBrackets(text: string): boolean {
  let n = 0;
  for (const c of ['[', '{']) {
    for (let i = text.indexOf(c); i >= 0; i = text.indexOf(c, i + 1)) {
      if (++n > MAX_JSON_DEPTH) return false;
    }
  }
  return true;
}

/**
 * Whether arrays and objects nest deeper than MAX_JSON_DEPTH in a JSON text (brackets inside
 * strings do not count). Without recursion, so any depth is safe; linear, and skipped for texts
 * with few brackets, so an ordinary body pays one or two indexOf scans.
 */
export function exceedsJsonDepth(text: string): boolean {
  if (fewBrackets(text)) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === BACKSLASH) i++;
        else if (d === QUOTE) break;
      }
    } else if (c === OPEN_SQUARE || c === OPEN_CURLY) {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === CLOSE_SQUARE || c === CLOSE_CURLY) depth--;
  }
  return false;
}

const WS = new Set([' ', '\t', '\n', '\r']);

/** A small JSON parser used only when JSON.parse fails: it finds the offset, or accepts NaN. */
class PyJsonParser {
  private i = 0;
  private depth = 0;
  constructor(
    private readonly s: string,
    private readonly loc: readonly LocItem[],
  ) {}

  private error(at: number): never {
    // Python counts code points; JavaScript strings count UTF-16 units.
    fail('json_invalid', [...this.loc, codePointLength(this.s.slice(0, at))], 'JSON decode error');
  }

  private ws(): void {
    while (this.i < this.s.length && WS.has(this.s[this.i]!)) this.i++;
  }

  parseDocument(): unknown {
    this.ws();
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.error(this.i); // "Extra data"
    return v;
  }

  private value(): unknown {
    const s = this.s;
    const c = s[this.i];
    if (c === '{' || c === '[') {
      // The recursion below is bounded by the limit, whatever the text.
      if (this.depth >= MAX_JSON_DEPTH) this.error(this.i);
      this.depth++;
      const v = c === '{' ? this.object() : this.array();
      this.depth--;
      return v;
    }
    if (c === '"') return this.string();
    for (const [word, v] of [
      ['null', null],
      ['true', true],
      ['false', false],
      ['NaN', NaN],
      ['Infinity', Infinity],
      ['-Infinity', -Infinity],
    ] as const) {
      if (s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?/.exec(s.slice(this.i, this.i + 400));
    if (m) {
      this.i += m[0].length;
      return Number(m[0]);
    }
    return this.error(this.i); // "Expecting value"
  }

  private object(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.i++;
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      if (this.s[this.i] !== '"') this.error(this.i); // "Expecting property name enclosed in double quotes"
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.error(this.i); // "Expecting ':' delimiter"
      this.i++;
      this.ws();
      setOwn(out, key, this.value());
      this.ws();
      const c = this.s[this.i];
      if (c === '}') {
        this.i++;
        return out;
      }
      if (c !== ',') this.error(this.i); // "Expecting ',' delimiter"
      this.i++;
      this.ws();
    }
  }

  private array(): unknown[] {
    const out: unknown[] = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value());
      this.ws();
      const c = this.s[this.i];
      if (c === ']') {
        this.i++;
        return out;
      }
      if (c !== ',') this.error(this.i);
      this.i++;
      this.ws();
    }
  }

  private string(): string {
    const start = this.i;
    const s = this.s;
    let out = '';
    this.i++;
    for (;;) {
      if (this.i >= s.length) this.error(start); // "Unterminated string starting at"
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        this.i++;
        return out;
      }
      if (c < 0x20) this.error(this.i); // "Invalid control character at"
      if (c !== 0x5c) {
        out += s[this.i];
        this.i++;
        continue;
      }
      const e = s[this.i + 1];
      const simple: Record<string, string> = {
        '"': '"',
        '\\': '\\',
        '/': '/',
        b: '\b',
        f: '\f',
        n: '\n',
        r: '\r',
        t: '\t',
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
        this.i += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(s.slice(this.i + 2, this.i + 6))) {
        out += String.fromCharCode(parseInt(s.slice(this.i + 2, this.i + 6), 16));
        this.i += 6;
      } else this.error(e === undefined ? start : this.i); // "Invalid \escape"
    }
  }
}
