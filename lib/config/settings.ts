// Every setting the service reads, validated and typed (./spec.ts). This table is the one
// source of truth: `astron-agent config`, the start banner and config.env.example follow it.
import { availableParallelism } from 'node:os';
import { cleanEnv } from './spec.js';
import {
  bool,
  hostAllowList,
  hostPort,
  hostPortList,
  int,
  msOrOff,
  oneOf,
  otlpProtocol,
  optionalUrl,
  otlpEndpoint,
  port,
  ratio,
  text,
  workers,
} from './validators.js';

export const SETTING_SPECS = {
  // --- service -------------------------------------------------------------------------------
  SERVICE_NAME: text()({ default: 'Agent', desc: 'service name (logs, metrics resource)' }),
  SERVICE_HOST: text(true)({
    default: '0.0.0.0',
    desc: 'bind address (an IPv6 link-local address with its zone: fe80::1%eth0)',
  }),
  SERVICE_PORT: port({ default: 17870, desc: 'bind port' }),
  SERVICE_WORKERS: workers(availableParallelism)({
    default: 1,
    desc: 'worker processes: an integer >= 1, or auto (available parallelism)',
  }),
  SERVICE_SCHEDULING: oneOf(['leastconn', 'none', 'rr'] as const)({
    default: 'leastconn',
    desc: 'connection distribution: leastconn = the primary hands each connection to the worker with the fewest open ones, and to another if that one dies before taking it; none = the kernel hands connections to workers; rr = node:cluster round-robin',
  }),
  SERVICE_HANDOFF: oneOf(['auto', 'native', 'ipc'] as const)({
    default: 'auto',
    desc: 'how leastconn hands connections to workers: native = descriptor batches over a socketpair per worker (native/handoff.c, built at install; Linux); ipc = node:cluster IPC, one message per connection (about 4x the primary CPU per connection); auto = native when built, else ipc',
  }),
  SERVICE_RELOAD: bool({
    default: false,
    desc: 'watch code and config.env, rolling reload on change',
  }),
  SERVICE_GRACEFUL_TIMEOUT: int(
    0,
    3_600_000,
    'ms',
  )({
    default: 30000,
    desc: 'the whole time a draining worker has: requests until this minus a cleanup margin (a quarter, at most 2 s), then cleanup; SIGKILL 2 s after it',
  }),
  SERVICE_READY_TIMEOUT: int(
    100,
    600_000,
    'ms',
  )({
    default: 10000,
    desc: 'how long a new worker may take to report ready',
  }),
  SERVICE_WORKER_TIMEOUT: int(
    1000,
    3_600_000,
    'ms',
  )({
    default: 30000,
    desc: 'a worker whose heartbeat is silent this long is killed as hung (a pause of the whole service restarts the count)',
  }),
  SERVICE_RESTART_BACKOFF_BASE: int(
    0,
    600_000,
    'ms',
  )({
    default: 200,
    desc: 'restart delay after the second crash in a row; doubles per crash (first crash: at once)',
  }),
  SERVICE_RESTART_BACKOFF_MAX: int(0, 600_000, 'ms')({ default: 10000, desc: 'restart delay cap' }),
  SERVICE_RESTART_STABLE: int(
    0,
    3_600_000,
    'ms',
  )({
    default: 30000,
    desc: 'a worker up this long is stable: its crash resets the backoff and is not counted against the budget',
  }),
  SERVICE_CRASH_BUDGET: int(
    0,
    10_000,
  )({
    default: 5,
    desc: 'more unstable restarts than this within SERVICE_CRASH_WINDOW stop the service (exit 4)',
  }),
  SERVICE_CRASH_WINDOW: int(1000, 3_600_000, 'ms')({ default: 60000, desc: 'crash budget window' }),
  SERVICE_SPARE_WORKERS: int(
    0,
    4,
  )({
    default: 1,
    desc: 'warm spares: workers forked and initialised in advance (not listening, not counted) so a crashed, hung, recycled or added worker is ready in milliseconds; each costs one idle worker of memory; 0 = off',
  }),
  SERVICE_MAX_REQUESTS: int(0)({
    default: 0,
    desc: 'recycle a worker (rolling, no request lost) after about this many requests, +0-10% jitter; 0 = off',
  }),
  SERVICE_MAX_MEMORY_MB: int(0)({
    default: 0,
    desc: 'recycle a worker whose RSS exceeds this many MB (checked every second); 0 = off',
  }),
  SERVICE_WS_PING_INTERVAL: msOrOff({
    default: 0,
    desc: 'WebSocket ping interval in ms; false or 0 = off (the original)',
  }),
  SERVICE_WS_PING_TIMEOUT: msOrOff({
    default: 0,
    desc: 'close a WebSocket whose pong is this late (ms); false or 0 = wait one interval',
  }),
  SERVICE_WRITE_STALL_TIMEOUT: int(
    100,
    3_600_000,
    'ms',
  )({
    default: 30000,
    desc: 'a chat client (SSE or WebSocket) whose connection accepts none of the buffered answer for this long is cut and its run aborted; the time it stalls never counts against LLM_TIMEOUT',
  }),
  SERVICE_WS_MAX_CONCURRENT_CHATS: int(
    1,
    10_000,
  )({
    default: 8,
    desc: 'chats one WebSocket may run at once; one more gets a 40002 protocol error frame',
  }),
  SERVICE_SSE_KEEPALIVE_INTERVAL: msOrOff({
    default: 15000,
    desc: 'a chat stream that has sent nothing for this long (a knowledge query, a tool call, a slow model) gets an SSE comment `: keep-alive` (POST /chat/completions; the WebSocket chat gets a ping), so that proxies with a read timeout (60 s is common) do not cut it; ms, false or 0 = off',
  }),
  SERVICE_MAX_BODY_SIZE: int(
    1024,
    1024 * 1024 * 1024,
    'bytes',
  )({
    default: 1048576,
    desc: 'largest accepted request body; larger gets 413',
  }),
  SERVICE_PID_FILE: text()({
    default: 'data/astron-agent.pid',
    desc: 'the primary writes its pid here (relative to the working directory) for `astron-agent reload`/`stop`; empty = none',
  }),
  HEALTH_READY_STORE: bool({
    default: true,
    desc: '/health/ready answers 503 while the bot-config database (MySQL; SQLite always answers) does not',
  }),
  HEALTH_READY_CACHE: bool({
    default: false,
    desc: '/health/ready answers 503 while Redis does not (off: without Redis the service answers from the database)',
  }),
  SERVICE_CONTROL_SOCKET: text()({
    default: 'data/astron-agent.sock',
    desc: "the primary's control socket (mode 0600) for `astron-agent status|reload|scale|stop`, relative to the working directory; empty = none (those commands then fall back to signals)",
  }),
  RUN_ENVIRON: text()({ default: 'development', desc: 'informational environment name' }),
  SERVICE_SUB: text()({ default: 'svc', desc: 'prefix of the per-request trace ids (sid)' }),
  // --- bot config storage (MySQL, embedded SQLite, Redis cache) ------------------------------
  MYSQL_HOST: text()({
    default: '',
    desc: 'MySQL/MariaDB host; empty = the embedded SQLite file (SQLITE_PATH)',
  }),
  MYSQL_PORT: port({ default: 3306, desc: 'MySQL port' }),
  MYSQL_USER: text()({ default: '', desc: 'MySQL user' }),
  MYSQL_PASSWORD: text()({ default: '', desc: 'MySQL password' }),
  MYSQL_DB: text()({
    default: 'agent',
    desc: 'MySQL database holding the bot_config table (created at start if missing)',
  }),
  MYSQL_POOL_SIZE: int(1, 1000)({ default: 10, desc: 'MySQL connections per worker, at most' }),
  MYSQL_TIMEOUT: int(
    100,
    600_000,
    'ms',
  )({
    default: 5000,
    desc: 'MySQL connect and query timeout; a request past it answers 40500',
  }),
  SQLITE_PATH: text(true)({
    default: 'data/agent.db',
    desc: 'embedded SQLite file used when MYSQL_HOST is empty (relative to the working directory)',
  }),
  REDIS_CLUSTER_ADDR: hostPortList({
    default: '',
    desc: 'Redis Cluster nodes host:port,host:port (wins over REDIS_ADDR); empty = no cluster',
  }),
  REDIS_ADDR: hostPort({
    default: '',
    desc: 'standalone Redis host:port; empty (and no cluster) = no cache',
  }),
  REDIS_PASSWORD: text()({ default: '', desc: 'Redis password (cluster and standalone)' }),
  REDIS_EXPIRE: int(
    1,
    2_147_483_647,
    's',
  )({
    default: 3600,
    desc: 'bot config cache expiry in seconds, slid on every hit',
  }),
  REDIS_TIMEOUT: int(
    50,
    600_000,
    'ms',
  )({
    default: 1000,
    desc: 'Redis connect and command timeout; past it a read uses the database, a write is refused',
  }),
  REDIS_CLIENT_CACHE: int(
    0,
    1_000_000,
    'entries',
  )({
    default: 1024,
    desc: 'near cache per worker (standalone Redis 6+, CLIENT TRACKING): configs read recently, kept in the worker and answered without a round trip until Redis pushes their invalidation; 0 = every read asks Redis',
  }),
  // --- logging -------------------------------------------------------------------------------
  LOG_LEVEL: oneOf(['error', 'warn', 'info', 'debug'] as const)({
    default: 'info',
    desc: 'log level',
  }),
  LOG_FORMAT: oneOf(['auto', 'json', 'text'] as const)({
    default: 'auto',
    desc: 'auto = readable on a TTY, JSON lines otherwise',
  }),
  // --- metrics (Prometheus scrape, OTLP push) -----------------------------------------------
  METRICS_ENABLE: bool({
    default: true,
    desc: 'Prometheus request/process series and GET /metrics (the whole cluster, any worker answers); false = off',
  }),
  METRICS_SCRAPE_TIMEOUT: int(
    50,
    60_000,
    'ms',
  )({
    default: 1000,
    desc: 'how long a scrape waits for the workers; a worker later than this is left out and counted in astron_agent_metrics_missing_workers',
  }),
  METRICS_MAX_SERIES: int(
    10,
    1_000_000,
  )({
    default: 500,
    desc: 'label sets kept per chat metric in each worker, and per metric in the primary accumulator of departed workers; past it, new ones count in one set labelled __other__ (bounds what a scrape ships and aggregates)',
  }),
  METRICS_PORT: int(
    0,
    65535,
  )({
    default: 0,
    desc: 'also serve /metrics from the primary on this port (same host as SERVICE_HOST); 0 = off',
  }),
  METRICS_TOKEN: text()({
    default: '',
    desc: 'when set, /metrics (service port and METRICS_PORT) requires `Authorization: Bearer <token>`',
  }),
  SERVICE_LOCATION: text()({
    default: '',
    desc: 'data-centre name: the dc label of the OTLP metrics, and the sid location (src when empty)',
  }),
  UPLOAD_METRICS: bool({ default: false, desc: 'push metrics over OTLP/HTTP from every worker' }),
  OTLP_ENABLE: bool({
    default: true,
    desc: 'false turns the OTLP push off even when UPLOAD_METRICS is true',
  }),
  OTLP_ENDPOINT: otlpEndpoint({
    default: 'http://127.0.0.1:4318/v1/metrics',
    desc: 'OTLP/HTTP (JSON) metrics endpoint: a full URL, or host:port meaning http://host:port/v1/metrics; 4318 is the OTLP/HTTP port, 4317 is gRPC (not spoken here)',
  }),
  OTLP_METRIC_TIMEOUT: int(
    1,
    600_000,
    'ms',
  )({ default: 3000, desc: 'timeout of one OTLP export request' }),
  OTLP_METRIC_EXPORT_INTERVAL_MILLIS: int(
    1,
    86_400_000,
    'ms',
  )({
    default: 3000,
    desc: 'OTLP export period; must be >= OTLP_METRIC_EXPORT_TIMEOUT_MILLIS',
  }),
  OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: int(
    1,
    600_000,
    'ms',
  )({
    default: 3000,
    desc: 'deadline of one collect-and-export cycle',
  }),
  // --- traces (OpenTelemetry, OTLP/HTTP JSON, per worker) -------------------------------------
  OTEL_TRACES_EXPORTER: oneOf(['none', 'otlp'] as const)({
    default: 'none',
    desc: 'otlp = every worker exports its spans (GenAI semantic conventions) over OTLP/HTTP JSON; none = off (the trace SDK is not even loaded)',
  }),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: optionalUrl({
    default: '',
    desc: 'OTLP/HTTP traces URL, used verbatim (e.g. http://collector:4318/v1/traces); empty = OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces',
  }),
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalUrl({
    default: '',
    desc: 'OTLP/HTTP base URL: traces go to <it>/v1/traces (when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is empty); empty = http://localhost:4318',
  }),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: otlpProtocol({
    default: '',
    desc: 'http/protobuf or http/json, the encoding of the trace export; empty = OTEL_EXPORTER_OTLP_PROTOCOL',
  }),
  OTEL_EXPORTER_OTLP_PROTOCOL: otlpProtocol({
    default: '',
    desc: 'http/protobuf or http/json for the trace export when OTEL_EXPORTER_OTLP_TRACES_PROTOCOL is empty; empty = http/protobuf (the OTLP default). The metrics push (UPLOAD_METRICS) always sends JSON',
  }),
  OTEL_TRACES_SAMPLER: oneOf([
    'parentbased_always_on',
    'parentbased_always_off',
    'parentbased_traceidratio',
    'always_on',
    'always_off',
    'traceidratio',
  ] as const)({
    default: 'parentbased_always_on',
    desc: "sampler of a trace started here; parentbased_* follow the sampled flag of the caller's traceparent",
  }),
  OTEL_TRACES_SAMPLER_ARG: ratio({
    default: 1,
    desc: 'the ratio of the traceidratio samplers, 0 to 1',
  }),
  OTEL_SEMCONV_STABILITY_OPT_IN: text()({
    default: '',
    desc: 'comma-separated; gen_ai_latest_experimental = emit only the pinned GenAI conventions (v1.41.0), without the attributes they deprecated (gen_ai.system)',
  }),
  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: bool({
    default: false,
    desc: 'record message contents, tool arguments and results, retrieval queries and documents in the spans (they may hold personal data)',
  }),
  OTLP_TRACE_TIMEOUT: int(
    1,
    600_000,
    'ms',
  )({ default: 3000, desc: 'timeout of one trace export request' }),
  OTLP_TRACE_MAX_QUEUE_SIZE: int(
    1,
    1_000_000,
  )({
    default: 2048,
    desc: 'spans waiting for export, at most; past it new spans are dropped (a dead collector costs memory up to this, never time)',
  }),
  OTLP_TRACE_SCHEDULE_DELAY_MILLIS: int(
    1,
    600_000,
    'ms',
  )({
    default: 3000,
    desc: 'delay between two batch exports',
  }),
  OTLP_TRACE_MAX_EXPORT_BATCH_SIZE: int(
    1,
    1_000_000,
  )({
    default: 500,
    desc: 'spans per export request, at most (capped at OTLP_TRACE_MAX_QUEUE_SIZE)',
  }),
  OTLP_TRACE_EXPORT_TIMEOUT_MILLIS: int(
    1,
    600_000,
    'ms',
  )({
    default: 3000,
    desc: 'deadline of one batch export',
  }),
  // --- chat completions: LLM upstream, key lookup (app auth), knowledge -----------------------
  LLM_TIMEOUT: int(
    100,
    3_600_000,
    'ms',
  )({
    default: 60000,
    desc: 'LLM upstream: the longest wait for its response (retries included) and between two stream chunks; past it the run ends with code -1',
  }),
  LLM_MAX_RETRIES: int(
    0,
    10,
  )({
    default: 2,
    desc: 'LLM upstream: retries of a failed connection or a 408/409/429/5xx answer, before any chunk arrived',
  }),
  APP_AUTH_HOST: text()({
    default: '',
    desc: 'app-auth host[:port] (HMAC-signed LLM key lookup by app id); empty = use the bot config model sk',
  }),
  APP_AUTH_ROUTER: text()({
    default: '',
    desc: 'app-auth path, e.g. /api-services/v2/app/details',
  }),
  APP_AUTH_PROT: oneOf(['http', 'https'] as const)({ default: 'http', desc: 'app-auth scheme' }),
  APP_AUTH_API_KEY: text()({ default: '', desc: 'app-auth HMAC api_key' }),
  APP_AUTH_SECRET: text()({ default: '', desc: 'app-auth HMAC secret' }),
  AGENT_ALLOWED_UPSTREAM_HOSTS: hostAllowList({
    default: '',
    desc: 'hosts a request may name as its LLM (model_config.api, a bot config plan/summary api) or MCP server: comma-separated host, host:port, *.domain[:port]; another host answers 40303 (LLM) / 40026 (MCP) and is never contacted, so the app-auth key never reaches it; empty = any host (as the original)',
  }),
  CHUNK_QUERY_URL: optionalUrl({
    default: '',
    desc: 'knowledge chunk query URL (POST); empty = a bot with knowledge repos answers 40500',
  }),
  // --- plugins of the ReAct runner (link tools, MCP, workflows) --------------------------------
  VERSIONS_LINK_URL: optionalUrl({
    default: '',
    desc: 'link tool schema query (GET ?app_id=&tool_ids=&versions=); empty = a request with link tools answers 40500',
  }),
  RUN_LINK_URL: optionalUrl({ default: '', desc: 'link tool execution (POST http_run)' }),
  LIST_MCP_PLUGIN_URL: optionalUrl({
    default: '',
    desc: 'MCP proxy: tool list (POST); empty = no proxy: mcp_server_urls are reached directly over MCP Streamable HTTP, mcp_server_ids answer 40500',
  }),
  RUN_MCP_PLUGIN_URL: optionalUrl({ default: '', desc: 'MCP proxy: tool call (POST)' }),
  GET_WORKFLOWS_URL: optionalUrl({
    default: '',
    desc: 'workflow protocol query (POST {"flow_id"}); empty = a request with workflows answers 40500',
  }),
  WORKFLOW_SSE_BASE_URL: optionalUrl({
    default: '',
    desc: 'workflow execution base URL (POST {base}/chat/completions, streamed)',
  }),
  PLUGIN_TIMEOUT: int(
    100,
    3_600_000,
    'ms',
  )({
    default: 40000,
    desc: 'deadline of one plugin call (link schema/run, MCP list/call, workflow schema and each wait of its stream, knowledge query); past it: 40023/40024/40026/40027/40028/40025',
  }),
};

export type SettingName = keyof typeof SETTING_SPECS;
export const SETTING_NAMES = Object.keys(SETTING_SPECS) as SettingName[];

type Cleaned = ReturnType<typeof cleanEnv<typeof SETTING_SPECS>>;
export type Settings = { readonly [K in SettingName]: Cleaned[K] };

const SECRET_NAME = /PASSWORD|SECRET|KEY|TOKEN/i;
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'SettingsError';
  }
}

/**
 * Validates the raw values (a merged environment). Throws SettingsError with one line per bad
 * variable, naming it and what is expected; a secret's value is never included.
 */
export function validateSettings(raw: Record<string, string | undefined>): Settings {
  const input: Record<string, string | undefined> = {};
  for (const name of SETTING_NAMES) input[name] = raw[name];
  const settings = cleanEnv(input, SETTING_SPECS, {
    reporter: ({ errors }) => {
      const names = Object.keys(errors);
      if (names.length === 0) return;
      const problems = names.map((name) => {
        const err = errors[name as SettingName];
        const why = err?.message ?? 'invalid';
        const shown = isSecretName(name) ? '' : ` (got ${JSON.stringify(raw[name] ?? '')})`;
        return `invalid setting ${name}: ${why}${shown}`;
      });
      throw new SettingsError(problems);
    },
  }) as Settings;
  const problems = crossFieldProblems(settings);
  if (problems.length > 0) throw new SettingsError(problems);
  return settings;
}

/** Rules that involve more than one setting: one line each, naming the variables. */
function crossFieldProblems(s: Settings): string[] {
  const problems: string[] = [];
  if (s.OTLP_METRIC_EXPORT_INTERVAL_MILLIS < s.OTLP_METRIC_EXPORT_TIMEOUT_MILLIS) {
    problems.push(
      `invalid settings OTLP_METRIC_EXPORT_INTERVAL_MILLIS (${s.OTLP_METRIC_EXPORT_INTERVAL_MILLIS}) and OTLP_METRIC_EXPORT_TIMEOUT_MILLIS (${s.OTLP_METRIC_EXPORT_TIMEOUT_MILLIS}): the export interval must be >= the export timeout`,
    );
  }
  if (s.METRICS_PORT !== 0 && s.METRICS_PORT === s.SERVICE_PORT) {
    problems.push(
      `invalid settings METRICS_PORT and SERVICE_PORT: both are ${s.SERVICE_PORT}; use another METRICS_PORT, or 0 for none`,
    );
  }
  if (Boolean(s.LIST_MCP_PLUGIN_URL) !== Boolean(s.RUN_MCP_PLUGIN_URL)) {
    problems.push(
      'invalid settings LIST_MCP_PLUGIN_URL and RUN_MCP_PLUGIN_URL: set both (MCP through the proxy) or neither (MCP servers reached directly)',
    );
  }
  if (s.APP_AUTH_HOST && !s.APP_AUTH_ROUTER.startsWith('/')) {
    problems.push(
      'invalid settings APP_AUTH_HOST and APP_AUTH_ROUTER: with APP_AUTH_HOST set, APP_AUTH_ROUTER must be a path starting with /',
    );
  }
  return problems;
}
