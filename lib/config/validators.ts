// Validators whose error messages say what is expected and never echo the input:
// the reporter decides whether a value may be shown (it never shows a secret's).
import { EnvError, makeValidator } from './spec.js';
import { parseHostAllowList } from './host-allow-list.js';

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

function expected(what: string): never {
  throw new EnvError(`expected ${what}`);
}

function parseInteger(input: string, min: number, max: number, what: string): number {
  const s = input.trim();
  if (!/^-?\d+$/.test(s)) expected(what);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) expected(what);
  return n;
}

export const bool = makeValidator<boolean>((input) => {
  const s = String(input).trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  return expected('a boolean: true/false, 1/0, yes/no or on/off');
});

export const port = makeValidator<number>((input) =>
  parseInteger(input, 1, 65535, 'a TCP port, an integer from 1 to 65535'),
);

export function int(min: number, max = Number.MAX_SAFE_INTEGER, unit = '') {
  const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
  const what = `an integer ${range}${unit ? ` (${unit})` : ''}`;
  return makeValidator<number>((input) => parseInteger(input, min, max, what));
}

/** Milliseconds, or `false`/`off`/`0` meaning disabled (0). */
export const msOrOff = makeValidator<number>((input) => {
  const s = String(input).trim().toLowerCase();
  if (s === '' || FALSE.has(s)) return 0;
  return parseInteger(
    s,
    0,
    2_147_483_647,
    'milliseconds (an integer >= 0), or false/off/0 to disable',
  );
});

/** `auto` (available parallelism) or an integer >= 1. */
export function workers(available: () => number) {
  return makeValidator<number>((input) => {
    const s = String(input).trim().toLowerCase();
    if (s === 'auto') return Math.max(1, available());
    return parseInteger(s, 1, 1024, 'an integer from 1 to 1024, or auto');
  });
}

export function oneOf<T extends string>(choices: readonly T[]) {
  return makeValidator<T>((input) => {
    const s = String(input).trim().toLowerCase() as T;
    if (!choices.includes(s)) expected(`one of ${choices.join(', ')}`);
    return s;
  });
}

/** Any string (trimmed); `nonEmpty` rejects an empty one. */
export function text(nonEmpty = false) {
  return makeValidator<string>((input) => {
    const s = String(input).trim();
    if (nonEmpty && s === '') expected('a non-empty value');
    return s;
  });
}

/** An http(s) URL, or empty (the feature is then off). */
export const optionalUrl = makeValidator<string>((input) => {
  const s = String(input).trim();
  if (s === '') return '';
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return expected('an http:// or https:// URL, or empty');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    expected('an http:// or https:// URL, or empty');
  return s;
});

/** A number from 0 to 1 (OTEL_TRACES_SAMPLER_ARG). */
/** OTLP_*_PROTOCOL: '' (not set: the next variable decides), http/protobuf or http/json. */
export const otlpProtocol = makeValidator<'' | 'http/protobuf' | 'http/json'>((input) => {
  const s = String(input).trim().toLowerCase();
  if (s === '' || s === 'http/protobuf' || s === 'http/json') return s;
  expected(
    s === 'grpc'
      ? "http/protobuf or http/json (OTLP over gRPC is not supported: use the collector's OTLP/HTTP port, 4318)"
      : 'http/protobuf or http/json',
  );
});

export const ratio = makeValidator<number>((input) => {
  const s = String(input).trim();
  const n = Number(s);
  if (s === '' || !Number.isFinite(n) || n < 0 || n > 1) expected('a number from 0 to 1');
  return n;
});

/**
 * OTLP/HTTP metrics endpoint: a full http(s) URL (a URL without a path gets /v1/metrics), or
 * `host:port` meaning `http://host:port/v1/metrics`. Returns the full URL.
 */
export const otlpEndpoint = makeValidator<string>((input) => {
  const what = 'an http(s) URL, or host:port (meaning http://host:port/v1/metrics)';
  const s = String(input).trim();
  if (s === '') expected(what);
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `http://${s}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    return expected(what);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '') expected(what);
  if (withScheme !== s && (u.port === '' || u.pathname !== '/' || u.search !== '')) expected(what);
  if (u.pathname === '/') u.pathname = '/v1/metrics';
  return u.toString();
});

function checkHostPort(entry: string, what: string): string {
  // Exactly one ':' (as the original requires); IPv6 literals are not supported there either.
  const parts = entry.split(':');
  if (parts.length !== 2 || parts[0]!.trim() === '') expected(what);
  parseInteger(parts[1]!, 1, 65535, what);
  return `${parts[0]!.trim()}:${parts[1]!.trim()}`;
}

/** `host:port`, or empty (the feature is then off). */
export const hostPort = makeValidator<string>((input) => {
  const s = String(input).trim();
  return s === '' ? '' : checkHostPort(s, 'host:port (one ":"), or empty');
});

/** `host:port,host:port,...` (entries trimmed), or empty. */
export const hostPortList = makeValidator<string>((input) => {
  const s = String(input).trim();
  if (s === '') return '';
  const what = 'a comma-separated list of host:port (one ":" each), or empty';
  const entries = s.split(',').map((e) => e.trim());
  if (entries.some((e) => e === '')) expected(what);
  return entries.map((e) => checkHostPort(e, what)).join(',');
});

/** AGENT_ALLOWED_UPSTREAM_HOSTS: `host`, `host:port`, `*.domain[:port]`, comma-separated, or empty. */
export const hostAllowList = makeValidator<string>((input) => {
  const s = String(input).trim();
  try {
    parseHostAllowList(s);
  } catch {
    return expected(
      'a comma-separated list of host, host:port, *.domain or *.domain:port (no scheme or path), or empty',
    );
  }
  return s
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)
    .join(',');
});
