// The little of envalid the settings used, without its import (and tslib's) in every process:
// a validator is a parse function attached to a spec (default, description); cleanEnv returns
// the default of an unset variable as it is, parses a set one, and hands every failure to the
// reporter at once.

/** A value that is not what the setting expects (the message says what it expects). */
export class EnvError extends TypeError {
  override name = 'EnvError';
}

export interface SpecOptions<T> {
  default?: T;
  desc?: string;
}

export interface ValidatorSpec<T> extends SpecOptions<T> {
  _parse: (input: string) => T;
}

export function makeValidator<T>(parse: (input: string) => T) {
  return (spec: SpecOptions<T> = {}): ValidatorSpec<T> => ({ ...spec, _parse: parse });
}

export type CleanedEnv<S> = {
  readonly [K in keyof S]: S[K] extends ValidatorSpec<infer T> ? T : never;
};

export function cleanEnv<S extends Record<string, ValidatorSpec<unknown>>>(
  env: Record<string, string | undefined>,
  specs: S,
  opts: { reporter: (r: { errors: Partial<Record<keyof S, Error>> }) => void },
): CleanedEnv<S> {
  const out: Record<string, unknown> = {};
  const errors: Partial<Record<keyof S, Error>> = {};
  for (const name of Object.keys(specs) as (keyof S & string)[]) {
    const spec = specs[name];
    const raw = env[name];
    try {
      if (raw !== undefined) {
        const value = spec._parse(raw);
        if (value === undefined || value === null) throw new EnvError(`invalid value`);
        out[name] = value;
      } else if ('default' in spec) out[name] = spec.default;
      else throw new EnvError(`missing: ${spec.desc ?? 'required'}`);
    } catch (err) {
      errors[name] = err instanceof Error ? err : new EnvError(String(err));
    }
  }
  opts.reporter({ errors });
  return out as CleanedEnv<S>;
}
