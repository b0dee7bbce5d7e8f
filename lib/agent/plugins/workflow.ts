// Workflow tools (spec 8.3). The schema of each workflow comes from the workflow service (its
// start node's outputs are the tool parameters), queried concurrently. A run is the workflow
// service's OpenAI-style streaming call: every frame is read as it arrives; frames with
// `code != 0` (or without a code) are error frames and end the run as the observation; the
// others carry content / reasoning_content, which the ReAct runner streams to the client while
// the planner sees only the first frame. The deadline is per wait (the answer, then each frame);
// the time the consumer holds a frame (its own client slow to read) never counts.
import { isPlainObject } from '../../schema/object.js';
import { AgentError, CODES } from '../errors.js';
import type { RunContext } from '../runners/types.js';
import {
  callError,
  deadline,
  postJson,
  readLines,
  type CallOptions,
  type PluginHttpClient,
} from './http.js';
import { makeTool, type Tool, type ToolFrame, type ToolParameters } from './types.js';
import { parseBoundedJson } from '../../schema/json.js';

export interface WorkflowOptions {
  /** GET_WORKFLOWS_URL (POST {"flow_id"}) */
  schemaUrl: string;
  /** WORKFLOW_SSE_BASE_URL: the call is POST {base}/chat/completions */
  sseBaseUrl: string;
  /** PLUGIN_TIMEOUT */
  timeoutMs: number;
  client: PluginHttpClient;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (isPlainObject(v) ? v : {});
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The tool of one schema answer: name, description and the start node's outputs. */
export function workflowTool(
  answer: unknown,
  requestedId: string,
  run: (flowId: string) => Tool['run'],
): Tool {
  const flow = obj(obj(answer).data).data;
  const f = obj(flow);
  const flowId = str(f.id) || requestedId;
  const nodes = obj(f.data).nodes;
  const start = (Array.isArray(nodes) ? nodes : [])
    .map(obj)
    .find((n) => str(n.id).startsWith('node-start::'));
  if (!start) {
    // No start node: the original's placeholder tool.
    const parameters: ToolParameters = { type: 'object', properties: {}, required: [] };
    return makeTool(
      'workflow',
      'unknown',
      'unknown workflow',
      parameters,
      run(flowId),
      'tool_name:unknown, tool_description:unknown workflow, tool_parameters:{}',
    );
  }
  const properties: Json = {};
  const required: string[] = [];
  const outputs = obj(start.data).outputs;
  for (const o of Array.isArray(outputs) ? outputs : []) {
    const out = obj(o);
    const name = str(out.name);
    properties[name] = isPlainObject(out.schema) ? out.schema : {};
    if (out.required === true) required.push(name);
  }
  return makeTool(
    'workflow',
    str(f.name),
    str(f.description),
    { type: 'object', properties, required },
    run(flowId),
  );
}

export async function buildWorkflowTools(
  opts: WorkflowOptions,
  ids: readonly string[],
  ctx: RunContext,
): Promise<Tool[]> {
  if (ids.length === 0) return [];
  if (!opts.schemaUrl) throw new AgentError(CODES.INTERNAL, 'GET_WORKFLOWS_URL is not set');
  const call: CallOptions = {
    client: opts.client,
    what: 'workflow schema query',
    timeoutMs: opts.timeoutMs,
    timeoutCode: CODES.WORKFLOW_CALL,
    signal: ctx.signal,
    trace: ctx.trace,
    requestId: ctx.requestId,
  };
  const answers = await Promise.all(
    ids.map((id) => postJson(opts.schemaUrl, { flow_id: id }, call)),
  );
  return answers.map((answer, i) =>
    workflowTool(
      answer,
      ids[i]!,
      (flowId) => (args, runCtx) => runWorkflow(opts, flowId, args, runCtx),
    ),
  );
}

/** The body of the workflow call (spec 8.3). */
export function workflowCallBody(flowId: string, uid: string, args: Json): Json {
  return {
    model: '',
    messages: [],
    stream: true,
    flow_id: flowId,
    uid,
    parameters: args,
    extra_body: { bot_id: 'workflow', caller: 'agent' },
  };
}

/** One frame of the stream as the ReAct runner reads it; undefined = skipped (no choices). */
export function workflowFrame(frame: unknown): ToolFrame | undefined {
  const f = obj(frame);
  if (f.code !== 0) return { observation: frame, error: true };
  const choices = f.choices;
  if (!Array.isArray(choices) || choices.length === 0) return undefined;
  const delta = obj(obj(choices[0]).delta);
  const content = typeof delta.content === 'string' ? delta.content : undefined;
  const reasoning =
    typeof delta.reasoning_content === 'string' ? delta.reasoning_content : undefined;
  const out: ToolFrame = {
    observation: {
      content: delta.content ?? null,
      reasoning_content: delta.reasoning_content ?? '',
    },
  };
  if (content) out.content = content;
  if (reasoning) out.reasoning = reasoning;
  return out;
}

async function* runWorkflow(
  opts: WorkflowOptions,
  flowId: string,
  args: Json,
  ctx: RunContext,
): AsyncGenerator<ToolFrame> {
  if (!opts.sseBaseUrl) throw new AgentError(CODES.INTERNAL, 'WORKFLOW_SSE_BASE_URL is not set');
  const call: CallOptions = {
    client: opts.client,
    what: 'workflow call',
    timeoutMs: opts.timeoutMs,
    timeoutCode: CODES.WORKFLOW_CALL,
    signal: ctx.signal,
  };
  const d = deadline(ctx.signal, opts.timeoutMs);
  let complete = false;
  try {
    const res = await opts.client.send(
      `${opts.sseBaseUrl.replace(/\/+$/, '')}/chat/completions`,
      {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'text/event-stream',
          'X-consumer-username': ctx.appId,
          Authorization: 'Bearer no_need',
        },
        body: JSON.stringify(workflowCallBody(flowId, ctx.uid, args)),
        trace: ctx.trace,
        requestId: ctx.requestId,
      },
      d.signal,
    );
    const status = res.statusCode ?? 0;
    if (status >= 400) {
      res.resume();
      throw new AgentError(CODES.INTERNAL, `workflow call answered HTTP ${status}`);
    }
    d.rearm();
    for await (const line of readLines(res)) {
      d.rearm();
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '') continue;
      if (data === '[DONE]') {
        complete = true;
        res.resume(); // what follows [DONE] is read and dropped: the connection is reused
        break;
      }
      let parsed: unknown;
      try {
        parsed = parseBoundedJson(data);
      } catch (err) {
        throw new AgentError(CODES.INTERNAL, 'workflow call sent a frame that is not JSON', {
          cause: err,
        });
      }
      const frame = workflowFrame(parsed);
      if (!frame) continue;
      d.hold();
      yield frame;
      d.rearm();
      if (frame.error) return;
    }
    complete = true;
  } catch (err) {
    throw callError(err, call, d.state.timedOut);
  } finally {
    d.dispose();
    // A consumer that stopped early, or an error frame: the stream is closed, not read to its end.
    if (!complete) d.abort();
  }
}
