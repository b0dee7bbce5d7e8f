// AGENT_ALLOWED_UPSTREAM_HOSTS: the hosts a request may name as its LLM (`model_config.api`, a
// bot config's plan/summary api) or as an MCP server. Entries, comma-separated: `host`,
// `host:port`, `*.domain` or `*.domain:port` (subdomains of domain, not domain itself), IPv6 in
// brackets. An entry without a port allows every port. Hosts are compared the way the WHATWG URL
// parser writes them (lowercase, punycode, IPv4 in dotted decimal), entries and URLs alike, so
// `0x7f.0.0.1` cannot pass for an entry `127.0.0.1` or the other way round.

export interface HostEntry {
  /** Normalised host name, or the domain after `*.` for a wildcard. */
  host: string;
  wildcard: boolean;
  /** A port, or undefined for any. */
  port: number | undefined;
}

/** An allow list; `null` means no restriction (the setting is empty). */
export type HostAllowList = readonly HostEntry[] | null;

function parseEntry(raw: string): HostEntry {
  const wildcard = raw.startsWith('*.');
  const rest = wildcard ? raw.slice(2) : raw;
  if (rest === '' || /[/?#@\s*\\]/.test(rest)) throw new Error(`not a host or host:port: ${raw}`);
  let u: URL;
  try {
    u = new URL(`http://${rest}`);
  } catch {
    throw new Error(`not a host or host:port: ${raw}`);
  }
  // URL drops the default port 80 of http: an explicit `:80` stays a port restriction.
  const explicit = /:(\d+)$/.exec(rest);
  return {
    host: u.hostname,
    wildcard,
    port: explicit ? Number(explicit[1]) : undefined,
  };
}

/** Parses the setting; throws naming the first bad entry. */
export function parseHostAllowList(value: string): HostAllowList {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return entries.length === 0 ? null : entries.map(parseEntry);
}

function effectivePort(u: URL): number {
  if (u.port) return Number(u.port);
  return u.protocol === 'https:' ? 443 : u.protocol === 'http:' ? 80 : 0;
}

/** Whether `url` (a string or URL) names an allowed host. Anything not a URL is refused. */
export function hostAllowed(list: HostAllowList, url: string | URL): boolean {
  if (list === null) return true;
  let u: URL;
  try {
    u = typeof url === 'string' ? new URL(url) : url;
  } catch {
    return false;
  }
  const host = u.hostname;
  const port = effectivePort(u);
  return list.some(
    (e) =>
      (e.wildcard ? host.endsWith(`.${e.host}`) : host === e.host) &&
      (e.port === undefined || e.port === port),
  );
}

/** The host[:port] of a URL as shown in an error, or the text itself when it is no URL. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
