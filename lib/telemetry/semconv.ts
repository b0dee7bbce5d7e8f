// The OpenTelemetry semantic conventions this service emits, pinned to one version and copied
// here (as @opentelemetry/semantic-conventions advises for conventions still in development:
// its "incubating" entry point may break in a minor release). GenAI, MCP and HTTP, v1.41.0: the
// last release holding the GenAI conventions in the main repository (v1.42.0 moved them to
// open-telemetry/semantic-conventions-genai).

export const SEMCONV_VERSION = '1.41.0';
export const SCHEMA_URL = `https://opentelemetry.io/schemas/${SEMCONV_VERSION}`;

// ---- GenAI (development) ---------------------------------------------------------------------
export const GEN_AI_OPERATION_NAME = 'gen_ai.operation.name';
export const GEN_AI_PROVIDER_NAME = 'gen_ai.provider.name';
/** Deprecated in v1.37.0 for gen_ai.provider.name; emitted too unless gen_ai_latest_experimental. */
export const GEN_AI_SYSTEM = 'gen_ai.system';
export const GEN_AI_REQUEST_MODEL = 'gen_ai.request.model';
export const GEN_AI_REQUEST_STREAM = 'gen_ai.request.stream';
export const GEN_AI_REQUEST_TOP_K = 'gen_ai.request.top_k';
export const GEN_AI_RESPONSE_ID = 'gen_ai.response.id';
export const GEN_AI_RESPONSE_MODEL = 'gen_ai.response.model';
export const GEN_AI_RESPONSE_FINISH_REASONS = 'gen_ai.response.finish_reasons';
export const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = 'gen_ai.response.time_to_first_chunk';
export const GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens';
export const GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens';
export const GEN_AI_INPUT_MESSAGES = 'gen_ai.input.messages';
export const GEN_AI_OUTPUT_MESSAGES = 'gen_ai.output.messages';
export const GEN_AI_AGENT_NAME = 'gen_ai.agent.name';
export const GEN_AI_AGENT_ID = 'gen_ai.agent.id';
export const GEN_AI_CONVERSATION_ID = 'gen_ai.conversation.id';
export const GEN_AI_TOOL_NAME = 'gen_ai.tool.name';
export const GEN_AI_TOOL_TYPE = 'gen_ai.tool.type';
export const GEN_AI_TOOL_DESCRIPTION = 'gen_ai.tool.description';
export const GEN_AI_TOOL_CALL_ID = 'gen_ai.tool.call.id';
export const GEN_AI_TOOL_CALL_ARGUMENTS = 'gen_ai.tool.call.arguments';
export const GEN_AI_TOOL_CALL_RESULT = 'gen_ai.tool.call.result';
export const GEN_AI_DATA_SOURCE_ID = 'gen_ai.data_source.id';
export const GEN_AI_RETRIEVAL_QUERY_TEXT = 'gen_ai.retrieval.query.text';
export const GEN_AI_RETRIEVAL_DOCUMENTS = 'gen_ai.retrieval.documents';
export const GEN_AI_TOKEN_TYPE = 'gen_ai.token.type';

export const OP_CHAT = 'chat';
export const OP_INVOKE_AGENT = 'invoke_agent';
export const OP_EXECUTE_TOOL = 'execute_tool';
export const OP_RETRIEVAL = 'retrieval';

// ---- MCP (development) -----------------------------------------------------------------------
export const MCP_METHOD_NAME = 'mcp.method.name';
export const MCP_SESSION_ID = 'mcp.session.id';
export const MCP_TOOLS_CALL = 'tools/call';

// ---- general / HTTP (stable) -----------------------------------------------------------------
export const ERROR_TYPE = 'error.type';
export const SERVER_ADDRESS = 'server.address';
export const SERVER_PORT = 'server.port';
export const CLIENT_ADDRESS = 'client.address';
export const HTTP_REQUEST_METHOD = 'http.request.method';
export const HTTP_RESPONSE_STATUS_CODE = 'http.response.status_code';
export const HTTP_ROUTE = 'http.route';
export const URL_PATH = 'url.path';
export const URL_SCHEME = 'url.scheme';
export const NETWORK_PROTOCOL_VERSION = 'network.protocol.version';
export const NETWORK_TRANSPORT = 'network.transport';
export const USER_AGENT_ORIGINAL = 'user_agent.original';

// ---- this service's own attributes ------------------------------------------------------------
/** The business code a run, LLM call or tool ended with (spec 5.1; 0 = success). */
export const AGENT_CODE = 'astron_agent.code';
export const AGENT_SID = 'astron_agent.sid';
export const AGENT_APP_ID = 'astron_agent.app_id';
export const AGENT_CALLER = 'astron_agent.caller';
/** link, mcp or workflow: which plugin kind a tool is (gen_ai.tool.type is "extension"). */
export const AGENT_PLUGIN_TYPE = 'astron_agent.plugin.type';

// ---- GenAI metrics (v1.41.0 names, units and explicit bucket boundaries) -------------------------
export const METRIC_OPERATION_DURATION = 'gen_ai.client.operation.duration';
export const METRIC_TIME_TO_FIRST_CHUNK = 'gen_ai.client.operation.time_to_first_chunk';
export const METRIC_TOKEN_USAGE = 'gen_ai.client.token.usage';
/** Seconds: gen_ai.client.operation.duration and .time_to_first_chunk. */
export const GEN_AI_DURATION_BUCKETS: readonly number[] = [
  0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/** Tokens: gen_ai.client.token.usage. */
export const GEN_AI_TOKEN_BUCKETS: readonly number[] = [
  1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
];
