// The ReAct runner (spec 7.6) and its summariser (spec 7.7). Each loop streams one planner
// completion: its reasoning_content is shown, its Thought/Action text never is; a Final Answer
// on the first loop is the answer itself (streamed as content). Otherwise the step is parsed,
// its tool runs, a tool-call chunk reports it, and the observation joins the scratchpad. A
// finished step, or the loop limit, hands the steps to the summariser, which writes the answer.
// An empty observation ends the run without an answer (as the original does).
import { endToolSpan, startToolSpan } from '../../telemetry/genai.js';
import { pyJson, type RunnerEvent, type ToolCall } from '../chunks.js';
import type { LlmModel, LlmStreamer } from '../llm.js';
import type { RunnerSelector } from '../pipeline.js';
import { pyTruthy } from '../plugins/http.js';
import { buildToolset, toolRefs, type PluginEndpoints } from '../plugins/index.js';
import type { Tool, Toolset } from '../plugins/types.js';
import { parseStep, PlannerReader } from '../react/parser.js';
import { plannerMessages, plannerSystem, summaryMessages } from '../react/prompts.js';
import type { Step } from '../react/scratchpad.js';
import type { RunContext, Runner, RunnerInputs } from './types.js';

/** error.type of a tool whose service reported a failure inside its answer (a frame with error). */
const TOOL_ERROR = { name: 'tool_error', message: 'the tool reported an error' };

/** The loop limit of /chat/completions (spec 7.1). */
export const OPENAPI_MAX_LOOP = 30;

export interface ReactInputs {
  /** The answer side: summariser model and instruct, knowledge text, question and history. */
  answer: RunnerInputs;
  /** The planner model and its instruct (custom: instruction.reasoning; OpenAPI: the bot's instruct). */
  planModel: LlmModel;
  planInstruct: string;
  toolset: Toolset;
  /** max_loop_count (custom) or 30 (OpenAPI); <= 0 runs the summariser at once. */
  maxLoop: number;
  /** Planner LLM (defaults to answer.llm). */
  llm?: LlmStreamer;
}

/** The tool-call chunk of a step (spec 4.1 / 7.6.5). */
export function toolCallEvent(
  tool: Pick<Tool, 'typ'> | undefined,
  step: Step,
  model: string,
): RunnerEvent {
  const call: ToolCall = {
    index: 0,
    id: null,
    function: {
      arguments: pyJson(pyTruthy(step.actionInput) ? step.actionInput : {}),
      name: step.action,
      response: pyJson(pyTruthy(step.observation) ? step.observation : {}),
    },
    type: tool?.typ === 'workflow' ? 'workflow' : 'tool',
    reason: step.thought,
  };
  return { type: 'tool_call', call, model };
}

/** The summariser (CoT process runner): answers from the steps with the answer model. */
export async function* summarise(
  answer: RunnerInputs,
  steps: readonly Step[],
  ctx: RunContext,
): AsyncGenerator<RunnerEvent> {
  const model = answer.model.domain;
  const messages = summaryMessages(answer, steps);
  for await (const d of answer.llm.stream(answer.model, messages, ctx.signal, ctx.llm)) {
    if (d.reasoning !== undefined) yield { type: 'reasoning', text: d.reasoning, model };
    if (d.content !== undefined) yield { type: 'content', text: d.content, model };
  }
}

export function reactRunner(input: ReactInputs): Runner {
  const llm = input.llm ?? input.answer.llm;
  const tools = input.toolset.tools;
  const names = tools.map((t) => t.name);
  const prompt = {
    instruct: input.planInstruct,
    knowledge: input.answer.knowledge,
    tools,
    question: input.answer.question,
    history: input.answer.history,
  };
  const planDomain = input.planModel.domain;

  async function* loop(ctx: RunContext): AsyncGenerator<RunnerEvent> {
    const system = plannerSystem(prompt);
    const steps: Step[] = [];
    for (let n = 1; n <= input.maxLoop; n++) {
      const reader = new PlannerReader(n);
      for await (const d of llm.stream(
        input.planModel,
        plannerMessages(system, prompt, steps),
        ctx.signal,
        ctx.llm,
      )) {
        const { events, stop } = reader.feed(d);
        for (const ev of events) yield { type: ev.type, text: ev.text, model: planDomain };
        if (stop) break; // ends the upstream request
      }
      if (reader.directAnswer) return;
      const parsed = parseStep(reader.stepText, names);
      if (parsed.finished) {
        steps.push(parsed);
        yield* summarise(input.answer, steps, ctx);
        return;
      }
      const tool = tools.find((t) => t.name.trim() === parsed.action);
      const step: Step = { ...parsed };
      if (!tool) {
        step.observation = { code: 400, message: `${parsed.action} not found`, data: null };
        yield toolCallEvent(undefined, step, planDomain);
      } else {
        const { span, context } = startToolSpan(ctx.trace, {
          name: tool.name,
          description: tool.description,
          plugin: tool.typ,
          // The ReAct text protocol has no call ids: the sid and the step number make one.
          callId: `${ctx.sid}:${n}`,
          args: parsed.actionInput,
        });
        const toolCtx = context === undefined ? ctx : { ...ctx, trace: context };
        let first = true;
        let failed: unknown;
        try {
          for await (const frame of tool.run(parsed.actionInput, toolCtx)) {
            if (first) {
              first = false;
              step.observation = frame.observation;
              yield toolCallEvent(tool, step, planDomain);
            }
            if (frame.error) {
              step.observation = frame.observation;
              failed = TOOL_ERROR;
              break;
            }
            if (frame.reasoning)
              yield { type: 'reasoning', text: frame.reasoning, model: planDomain };
            if (frame.content) yield { type: 'content', text: frame.content, model: planDomain };
          }
        } catch (err) {
          failed = err;
          throw err;
        } finally {
          endToolSpan(span, { result: step.observation, error: failed });
        }
        if (first) yield toolCallEvent(tool, step, planDomain); // a tool that answered nothing
      }
      if (!pyTruthy(step.observation)) return;
      steps.push(step);
    }
    yield* summarise(input.answer, steps, ctx);
  }

  return {
    name: 'react',
    async *run(ctx: RunContext): AsyncGenerator<RunnerEvent> {
      try {
        yield* loop(ctx);
      } finally {
        // MCP sessions end after the answer: the client does not wait for them.
        void input.toolset.close();
      }
    },
  };
}

/**
 * Runner selection of /chat/completions for a bot with plugins (spec 7.1): the planner model,
 * the bot's tool_ids, mcp_server_ids/urls and flow_ids, the bot's instruct, 30 loops at most.
 */
export function openApiReactSelector(endpoints: PluginEndpoints): RunnerSelector {
  return async (build, ctx) => {
    const planModel = await build.planModel();
    const c = build.config;
    const toolset = await buildToolset(
      endpoints,
      {
        tools: toolRefs(c.tool_ids),
        mcpServerIds: c.mcp_server_ids,
        mcpServerUrls: c.mcp_server_urls,
        workflowIds: c.flow_ids,
      },
      ctx,
    );
    return reactRunner({
      answer: build.inputs,
      planModel,
      planInstruct: build.inputs.instruct,
      toolset,
      maxLoop: OPENAPI_MAX_LOOP,
    });
  };
}
