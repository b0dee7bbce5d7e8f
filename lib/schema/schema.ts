// The schema toolkit: request validation with pydantic's vocabulary (spec 3.4), shared by every
// endpoint and by the stores.
//
// A schema checks an input and returns the normalised value (lax conversions as pydantic's
// Python mode: "3" -> 3 for an int, 1 -> true for a bool; defaults filled in; unknown keys of a
// model dropped or kept), or throws a RequestValidationError carrying ONE issue: the first one
// in declaration order (headers/query first, then body), as the original reports it. An issue
// is `{type, loc, msg}` with pydantic's error types and texts; its client message is
// `"<type>, <last loc element>, <msg>"`, answered as HTTP 200 with the 40002 chunk body of
// spec 3.4 (validationBody in lib/agent/chunks.ts).
//
// The ground floor: pure (no express, no I/O), it imports nothing of lib/ outside lib/schema/,
// so http/, agent/ and store/ (which reads stored configs with it) can all depend on it.

import { isPlainObject, setOwn } from './object.js';

export type LocItem = string | number;

export interface ValidationIssue {
  type: string;
  loc: LocItem[];
  msg: string;
}

/** `"type, last-loc, msg"` (spec 3.4). */
export function formatIssue(issue: ValidationIssue): string {
  const last = issue.loc.length > 0 ? issue.loc[issue.loc.length - 1] : '';
  return `${issue.type}, ${String(last)}, ${issue.msg}`;
}

export class RequestValidationError extends Error {
  constructor(readonly issue: ValidationIssue) {
    super(formatIssue(issue));
    this.name = 'RequestValidationError';
  }
}

/** Throws the issue. Custom checks (e.g. the chat message rules) use it directly. */
export function fail(type: string, loc: readonly LocItem[], msg: string): never {
  throw new RequestValidationError({ type, loc: [...loc], msg });
}

// ---- schemas ---------------------------------------------------------------------------------

export interface Schema<T> {
  /** Returns the normalised value or throws RequestValidationError. */
  check(input: unknown, loc: readonly LocItem[]): T;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** Python's len(): code points, not UTF-16 units. */
export function codePointLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** Python's repr of a number in a message: floats keep a ".0". */
const numText = (n: number, float: boolean) =>
  float && Number.isInteger(n) ? `${n}.0` : Number.isNaN(n) ? 'nan' : String(n);

export interface StrOptions {
  minLength?: number;
  maxLength?: number;
}

/** `str`: only strings (pydantic does not turn numbers into strings). */
export function str(opts: StrOptions = {}): Schema<string> {
  return {
    check(input, loc) {
      if (typeof input !== 'string') fail('string_type', loc, 'Input should be a valid string');
      if (opts.minLength !== undefined || opts.maxLength !== undefined) {
        const len = codePointLength(input);
        if (opts.minLength !== undefined && len < opts.minLength) {
          fail(
            'string_too_short',
            loc,
            `String should have at least ${plural(opts.minLength, 'character')}`,
          );
        }
        if (opts.maxLength !== undefined && len > opts.maxLength) {
          fail(
            'string_too_long',
            loc,
            `String should have at most ${plural(opts.maxLength, 'character')}`,
          );
        }
      }
      return input;
    },
  };
}

export interface NumberOptions {
  ge?: number;
  gt?: number;
  le?: number;
  lt?: number;
}

function checkBounds(
  n: number,
  opts: NumberOptions,
  loc: readonly LocItem[],
  float: boolean,
): number {
  if (opts.gt !== undefined && !(n > opts.gt))
    fail('greater_than', loc, `Input should be greater than ${numText(opts.gt, float)}`);
  if (opts.ge !== undefined && !(n >= opts.ge)) {
    fail(
      'greater_than_equal',
      loc,
      `Input should be greater than or equal to ${numText(opts.ge, float)}`,
    );
  }
  if (opts.lt !== undefined && !(n < opts.lt))
    fail('less_than', loc, `Input should be less than ${numText(opts.lt, float)}`);
  if (opts.le !== undefined && !(n <= opts.le)) {
    fail(
      'less_than_equal',
      loc,
      `Input should be less than or equal to ${numText(opts.le, float)}`,
    );
  }
  return n;
}

const INT_TEXT = /^[+-]?\d+(?:_\d+)*(?:\.0*)?$/;
const FLOAT_TEXT =
  /^[+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?$|^[+-]?(?:inf|infinity|nan)$/i;

/** `int`: integers, integral floats, numeric strings and booleans (lax mode). */
export function int(opts: NumberOptions = {}): Schema<number> {
  return {
    check(input, loc) {
      let n: number;
      if (typeof input === 'boolean') n = input ? 1 : 0;
      else if (typeof input === 'number') {
        if (!Number.isFinite(input)) fail('finite_number', loc, 'Input should be a finite number');
        if (!Number.isInteger(input))
          fail(
            'int_from_float',
            loc,
            'Input should be a valid integer, got a number with a fractional part',
          );
        n = input;
      } else if (typeof input === 'string') {
        const s = input.trim();
        if (!INT_TEXT.test(s))
          fail(
            'int_parsing',
            loc,
            'Input should be a valid integer, unable to parse string as an integer',
          );
        n = Math.trunc(Number(s.replace(/_/g, '')));
      } else fail('int_type', loc, 'Input should be a valid integer');
      return checkBounds(n, opts, loc, false);
    },
  };
}

/** `float`: numbers, numeric strings and booleans (lax mode); inf and nan are allowed. */
export function float(opts: NumberOptions = {}): Schema<number> {
  return {
    check(input, loc) {
      let n: number;
      if (typeof input === 'boolean') n = input ? 1 : 0;
      else if (typeof input === 'number') n = input;
      else if (typeof input === 'string') {
        const s = input.trim();
        if (!FLOAT_TEXT.test(s))
          fail(
            'float_parsing',
            loc,
            'Input should be a valid number, unable to parse string as a number',
          );
        const lower = s.toLowerCase().replace(/_/g, '');
        n = /nan$/.test(lower)
          ? NaN
          : /inf(inity)?$/.test(lower)
            ? lower.startsWith('-')
              ? -Infinity
              : Infinity
            : Number(lower);
      } else fail('float_type', loc, 'Input should be a valid number');
      return checkBounds(n, opts, loc, true);
    },
  };
}

const TRUE_TEXT = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_TEXT = new Set(['0', 'off', 'f', 'false', 'n', 'no']);

/** `bool`: booleans, 0/1 and the usual words (lax mode). */
export function bool(): Schema<boolean> {
  return {
    check(input, loc) {
      if (typeof input === 'boolean') return input;
      if (typeof input === 'number') {
        if (input === 0 || input === 1) return input === 1;
        fail('bool_parsing', loc, 'Input should be a valid boolean, unable to interpret input');
      }
      if (typeof input === 'string') {
        const s = input.trim().toLowerCase();
        if (TRUE_TEXT.has(s)) return true;
        if (FALSE_TEXT.has(s)) return false;
        fail('bool_parsing', loc, 'Input should be a valid boolean, unable to interpret input');
      }
      return fail('bool_type', loc, 'Input should be a valid boolean');
    },
  };
}

/** `Literal[...]`: one of the given values. */
export function literal<const T extends readonly (string | number | boolean)[]>(
  ...values: T
): Schema<T[number]> {
  const repr = (v: string | number | boolean) =>
    typeof v === 'string' ? `'${v}'` : typeof v === 'boolean' ? (v ? 'True' : 'False') : String(v);
  const expected =
    values.length <= 1
      ? values.map(repr).join('')
      : `${values.slice(0, -1).map(repr).join(', ')} or ${repr(values[values.length - 1]!)}`;
  return {
    check(input, loc) {
      if (!values.includes(input as T[number]))
        fail('literal_error', loc, `Input should be ${expected}`);
      return input as T[number];
    },
  };
}

/** Any value, unchanged. */
export function any(): Schema<unknown> {
  return { check: (input) => input };
}

/** `Optional[T]` without a default: null passes as null. */
export function nullable<T>(inner: Schema<T>): Schema<T | null> {
  return { check: (input, loc) => (input === null ? null : inner.check(input, loc)) };
}

export interface ListOptions {
  minLength?: number;
  maxLength?: number;
}

/** `list[T]`: arrays; an item's issue is located by its index. */
export function list<T>(item: Schema<T>, opts: ListOptions = {}): Schema<T[]> {
  return {
    check(input, loc) {
      if (!Array.isArray(input)) fail('list_type', loc, 'Input should be a valid list');
      const out = input.map((v, i) => item.check(v, [...loc, i]));
      if (opts.minLength !== undefined && out.length < opts.minLength) {
        fail(
          'too_short',
          loc,
          `List should have at least ${plural(opts.minLength, 'item')} after validation, not ${out.length}`,
        );
      }
      if (opts.maxLength !== undefined && out.length > opts.maxLength) {
        fail(
          'too_long',
          loc,
          `List should have at most ${plural(opts.maxLength, 'item')} after validation, not ${out.length}`,
        );
      }
      return out;
    },
  };
}

/** `dict[str, T]`. */
export function dict<T>(value: Schema<T>): Schema<Record<string, T>> {
  return {
    check(input, loc) {
      if (!isPlainObject(input)) fail('dict_type', loc, 'Input should be a valid dictionary');
      const out: Record<string, T> = {};
      for (const [k, v] of Object.entries(input)) setOwn(out, k, value.check(v, [...loc, k]));
      return out;
    },
  };
}

/** A model field with a default (pydantic `Field(default=...)` / `default_factory`). */
export interface OptionalField<T> {
  readonly optional: true;
  readonly schema: Schema<T>;
  readonly fallback: () => T;
}

export function optional<T>(schema: Schema<T>, fallback: () => T): OptionalField<T> {
  return { optional: true, schema, fallback };
}

type FieldSpec = Schema<unknown> | OptionalField<unknown>;
type FieldValue<F> = F extends OptionalField<infer T> ? T : F extends Schema<infer T> ? T : never;
export type ModelOf<F extends Record<string, FieldSpec>> = { [K in keyof F]: FieldValue<F[K]> };

export interface ModelOptions {
  /** What to do with keys that are not fields: drop them (pydantic's default), keep them, or fail. */
  extra?: 'ignore' | 'allow' | 'forbid';
}

export interface ModelSchema<T> extends Schema<T> {
  readonly fields: readonly string[];
}

/**
 * A pydantic model: fields checked in declaration order; a missing field takes its default or
 * is `missing`. Anything but an object is `model_attributes_type` (FastAPI validates bodies
 * with from_attributes, which gives that type for nested models too).
 */
export function model<F extends Record<string, FieldSpec>>(
  fields: F,
  opts: ModelOptions & { extra: 'allow' },
): ModelSchema<ModelOf<F> & Record<string, unknown>>;
export function model<F extends Record<string, FieldSpec>>(
  fields: F,
  opts?: ModelOptions,
): ModelSchema<ModelOf<F>>;
export function model<F extends Record<string, FieldSpec>>(
  fields: F,
  opts: ModelOptions = {},
): ModelSchema<ModelOf<F>> {
  const names = Object.keys(fields);
  const known = new Set(names);
  const extra = opts.extra ?? 'ignore';
  return {
    fields: names,
    check(input, loc) {
      if (!isPlainObject(input)) {
        fail(
          'model_attributes_type',
          loc,
          'Input should be a valid dictionary or object to extract fields from',
        );
      }
      const out: Record<string, unknown> = {};
      for (const name of names) {
        const spec = fields[name]!;
        const at = [...loc, name];
        if (!Object.hasOwn(input, name)) {
          if ('optional' in spec) out[name] = spec.fallback();
          else fail('missing', at, 'Field required');
          continue;
        }
        const schema = 'optional' in spec ? spec.schema : spec;
        setOwn(out, name, schema.check(input[name], at));
      }
      if (extra !== 'ignore') {
        for (const [k, v] of Object.entries(input)) {
          if (known.has(k)) continue;
          if (extra === 'forbid')
            fail('extra_forbidden', [...loc, k], 'Extra inputs are not permitted');
          setOwn(out, k, v);
        }
      }
      return out as ModelOf<F>;
    },
  };
}

// ---- request parts ---------------------------------------------------------------------------

/**
 * Validates query parameters (or headers) against a model: each name's LAST value counts, as in
 * Starlette; an issue is located at `[source, name]`.
 */
export function validateParams<T>(
  schema: Schema<T>,
  source: 'query' | 'header',
  values: Iterable<[string, string]>,
): T {
  const obj: Record<string, unknown> = {};
  for (const [k, v] of values) setOwn(obj, source === 'header' ? k.toLowerCase() : k, v);
  return schema.check(obj, [source]);
}
