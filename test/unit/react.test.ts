// The pure parts of the ReAct runner: the planner reader and step parser (spec 7.6.3/7.6.4), the
// scratchpad and summariser renderings (7.6.1/7.7), the prompts around the markers, and the loop
// of 7.6.2 with an in-memory LLM and in-memory tools (no sockets).
import { expect } from 'chai';
import type { RunnerEvent } from '../../lib/agent/chunks.js';
import { AgentError, CODES } from '../../lib/agent/errors.js';
import type { LlmDelta, LlmMessage, LlmModel, LlmStreamer } from '../../lib/agent/llm.js';
import { makeTool, type Tool, type ToolFrame } from '../../lib/agent/plugins/types.js';
import { parseStep, PlannerReader } from '../../lib/agent/react/parser.js';
import {
  PLANNER_SYSTEM_PROMPT,
  plannerMessages,
  plannerSystem,
  summaryMessages,
} from '../../lib/agent/react/prompts.js';
import {
  renderScratchpad,
  renderSummarySteps,
  type Step,
} from '../../lib/agent/react/scratchpad.js';
import { reactRunner, toolCallEvent } from '../../lib/agent/runners/react.js';
import type { RunContext } from '../../lib/agent/runners/types.js';

function code(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(AgentError);
    return (err as AgentError).code;
  }
  throw new Error('did not throw');
}

describe('ReAct: parsing a planner step (spec 7.6.4)', () => {
  const tools = ['get_weather', 'search'];

  it('reads thought, action and a JSON object input; stops at Observation:', () => {
    const s = parseStep(
      'Thought: I need the weather\nAction: get_weather\nAction Input: {"city": "Hefei"}\nObservation:',
      tools,
    );
    expect(s).to.deep.equal({
      thought: 'I need the weather',
      action: 'get_weather',
      actionInput: { city: 'Hefei' },
      finished: false,
    });
  });

  it('trims the action and matches tool names after trimming', () => {
    const s = parseStep('Thought: t\nAction:   search  \nAction Input:   {}  ', [' search ']);
    expect(s.action).to.equal('search');
    expect(s.actionInput).to.deep.equal({});
  });

  it('a step without Thought: has an empty thought', () => {
    expect(parseStep('Action: search\nAction Input: {"q": 1}', tools).thought).to.equal('');
  });

  it('Final Answer: is a finished step whose thought ends at the marker', () => {
    expect(parseStep('Thought: I know it\nFinal Answer: 42', tools)).to.deep.equal({
      thought: 'I know it',
      action: '',
      actionInput: {},
      finished: true,
    });
    expect(parseStep('Final Answer: 42', tools).thought).to.equal('');
  });

  it('40022 for output that breaks the format', () => {
    const bad = [
      '', // an empty completion
      'Hello! How can I help?', // plain prose
      'Thought: x\nAction: search', // no Action Input:
      'Thought: x\nAction Input: {}', // no Action:
      'Thought: x\nAction: search\nAction: search\nAction Input: {}', // two actions
      'Thought: x\nAction: search\nAction Input: {}\nAction Input: {}', // two inputs
      'Thought: x\nAction: unknown_tool\nAction Input: {}', // not a tool
      'Thought: x\nAction: search\nAction Input: {city: Hefei}', // not JSON
      'Thought: x\nAction: search\nAction Input: [1, 2]', // not an object
      'Thought: x\nAction: search\nAction Input: "text"',
      // nested past MAX_JSON_DEPTH: the scratchpad's Python-style dump would exhaust the stack
      `Thought: x\nAction: search\nAction Input: {"q": ${'['.repeat(5000)}${']'.repeat(5000)}}`,
    ];
    for (const text of bad)
      expect(
        code(() => parseStep(text, tools)),
        text,
      ).to.equal(40022);
    const err = (() => {
      try {
        parseStep('nope', tools);
      } catch (e) {
        return e as AgentError;
      }
    })()!;
    expect(err.message).to.equal('Model returned reasoning content format is incorrect');
  });
});

describe('ReAct: reading a planner completion (spec 7.6.3)', () => {
  const feed = (r: PlannerReader, ds: LlmDelta[]) => {
    const events: { type: string; text: string }[] = [];
    let stop = false;
    for (const d of ds) {
      const out = r.feed(d);
      events.push(...out.events);
      if (out.stop) {
        stop = true;
        break;
      }
    }
    return { events, stop };
  };

  it('never shows planner text, shows reasoning_content, stops at Observation:', () => {
    const r = new PlannerReader(1);
    const out = feed(r, [
      { reasoning: 'hmm' },
      { content: 'Thought: need tool\nAction: search\nAction Input: {"q": "x"}\nObserv' },
      { content: 'ation: made up' },
      { content: 'never read' },
    ]);
    expect(out.events).to.deep.equal([{ type: 'reasoning', text: 'hmm' }]);
    expect(out.stop).to.equal(true);
    expect(r.directAnswer).to.equal(false);
    expect(r.stepText).to.equal(
      'Thought: need tool\nAction: search\nAction Input: {"q": "x"}\nObservation: made up',
    );
  });

  it('content in a chunk that has reasoning_content is ignored', () => {
    const r = new PlannerReader(2);
    expect(feed(r, [{ reasoning: 'r', content: 'Thought: lost' }]).events).to.deep.equal([
      { type: 'reasoning', text: 'r' },
    ]);
    expect(r.stepText).to.equal('');
  });

  it('loop 1: a Final Answer (marker split across chunks) becomes the streamed answer', () => {
    const r = new PlannerReader(1);
    const out = feed(r, [
      { content: 'Thought: easy\nFinal An' },
      { content: 'swer: Hel' },
      { content: 'lo' },
      { reasoning: 'still thinking' },
      { content: ' there' },
    ]);
    expect(r.directAnswer).to.equal(true);
    expect(out.stop).to.equal(false);
    expect(out.events).to.deep.equal([
      { type: 'content', text: ' Hel' },
      { type: 'content', text: 'lo' },
      { type: 'reasoning', text: 'still thinking' },
      { type: 'content', text: ' there' },
    ]);
  });

  it('loop 1: only the text between the first and a second marker is the first piece', () => {
    const r = new PlannerReader(1);
    const out = feed(r, [{ content: 'Final Answer: A Final Answer: B' }]);
    expect(out.events).to.deep.equal([{ type: 'content', text: ' A ' }]);
  });

  it('from loop 2 on a Final Answer is not shown: reading stops', () => {
    const r = new PlannerReader(2);
    const out = feed(r, [{ content: 'Thought: done\nFinal Answer: secret' }, { content: 'more' }]);
    expect(out.events).to.deep.equal([]);
    expect(out.stop).to.equal(true);
    expect(r.directAnswer).to.equal(false);
  });
});

describe('ReAct: scratchpad, summariser steps and prompts', () => {
  const steps: Step[] = [
    {
      thought: 'weather first',
      action: 'get_weather',
      actionInput: { city: '合肥' },
      observation: { temp: 20, ok: true },
      finished: false,
    },
    { thought: 'done', action: '', actionInput: {}, finished: true },
  ];

  it('renders the scratchpad with the markers and Python-style JSON', () => {
    expect(renderScratchpad(steps.slice(0, 1))).to.equal(
      'Thought: weather first\nAction: get_weather\nAction Input: {"city": "合肥"}\nObservation: {"temp": 20, "ok": true}',
    );
    expect(renderScratchpad([])).to.equal('');
  });

  it('renders the summariser steps numbered from 1 (spec 7.7 layout)', () => {
    expect(renderSummarySteps(steps)).to.equal(
      '\n1.{\n    "think": "weather first",\n    "call tool": {"name": "get_weather", "input": {"city": "合肥"}},\n    "tool response": {"temp": 20, "ok": true}\n}\n' +
        '\n' +
        '\n2.{\n    "think": "done",\n    "call tool": null,\n    "tool response": null\n}\n',
    );
  });

  it('fills the planner prompt: tools, names, None for empty instruct/knowledge, literal {{ }}', () => {
    const tools = [
      { name: 'a', schemaTemplate: 'tool_name:a, tool_description:A, tool_parameters:{}' },
      { name: 'b', schemaTemplate: 'tool_name:b, tool_description:B, tool_parameters:{}' },
    ];
    const input = { instruct: '', knowledge: '', tools, question: 'Q?', history: [] };
    const system = plannerSystem(input, new Date(2024, 0, 2, 3, 4, 5));
    expect(system).to.include('2024-01-02 03:04:05');
    expect(system).to.include('one of (a,b)');
    expect(system).to.include(`${tools[0]!.schemaTemplate}\n${tools[1]!.schemaTemplate}`);
    expect(system).to.include('{{"key1": "value1", ...}}');
    expect(system.match(/\nNone\n/g)).to.have.length(2);
    expect(system.endsWith('Begin!')).to.equal(true);
    for (const marker of [
      'Thought:',
      'Action:',
      'Action Input:',
      'Observation:',
      'Final Answer:',
    ]) {
      expect(PLANNER_SYSTEM_PROMPT).to.include(marker);
    }
    const msgs = plannerMessages(system, input, steps.slice(0, 1));
    expect(msgs.map((m) => m.role)).to.deep.equal(['system', 'user']);
    expect(msgs[1]!.content).to.equal(
      `\nPrevious chat history:\n无\n\nQuestion: Q?\n${renderScratchpad(steps.slice(0, 1))}\n`,
    );
  });

  it('fills the summariser prompt with the steps, history and question', () => {
    const msgs = summaryMessages(
      {
        instruct: 'be nice',
        knowledge: 'K',
        question: 'Q?',
        history: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'yo' },
        ],
      },
      steps,
    );
    expect(msgs[0]!.content).to.include('be nice').and.include('\nK\n');
    expect(msgs[1]!.content).to.include(renderSummarySteps(steps));
    expect(msgs[1]!.content).to.include('User: hi\nAssistant: yo');
    expect(msgs[1]!.content).to.include('Q?');
  });

  it('builds the tool-call event of a step (spec 4.1)', () => {
    const ev = toolCallEvent({ typ: 'workflow' }, steps[0]!, 'm');
    expect(ev).to.deep.equal({
      type: 'tool_call',
      model: 'm',
      call: {
        index: 0,
        id: null,
        type: 'workflow',
        reason: 'weather first',
        function: {
          name: 'get_weather',
          arguments: '{"city": "合肥"}',
          response: '{"temp": 20, "ok": true}',
        },
      },
    });
    const empty = toolCallEvent(
      { typ: 'link' },
      { ...steps[0]!, actionInput: {}, observation: null },
      'm',
    );
    expect(empty.type === 'tool_call' && empty.call.function).to.deep.include({
      arguments: '{}',
      response: '{}',
    });
    expect(empty.type === 'tool_call' && empty.call.type).to.equal('tool');
  });
});

// ---- the loop, in memory ------------------------------------------------------------------------

type Turn = (LlmDelta | string)[];

/** An LLM that answers each call with the next scripted turn and records the messages. */
function scriptedLlm(turns: Turn[]) {
  const calls: { model: LlmModel; messages: LlmMessage[] }[] = [];
  const llm: LlmStreamer = {
    async *stream(model, messages) {
      calls.push({ model, messages });
      const turn = turns.shift();
      if (!turn) throw new Error('no more scripted turns');
      for (const d of turn) yield typeof d === 'string' ? { content: d } : d;
    },
  };
  return { llm, calls };
}

const ctx = (): RunContext => ({
  sid: 'sid1',
  appId: 'app',
  uid: 'u',
  signal: new AbortController().signal,
});
const model: LlmModel = { domain: 'plan-m', api: 'http://x', key: 'k' };
const answerModel: LlmModel = { domain: 'answer-m', api: 'http://x', key: 'k' };

function tool(
  name: string,
  typ: 'link' | 'workflow',
  frames: (args: Record<string, unknown>) => ToolFrame[],
): Tool & { calls: Record<string, unknown>[] } {
  const calls: Record<string, unknown>[] = [];
  const t = makeTool(
    typ,
    name,
    `${name} tool`,
    { type: 'object', properties: {}, required: [] },
    async function* (args) {
      calls.push(args);
      yield* frames(args);
    },
  );
  return Object.assign(t, { calls });
}

async function run(turns: Turn[], tools: Tool[], maxLoop = 5) {
  const { llm, calls } = scriptedLlm(turns);
  let closed = 0;
  const runner = reactRunner({
    answer: {
      llm,
      model: answerModel,
      instruct: 'answer-instruct',
      knowledge: '',
      question: 'Q?',
      history: [],
    },
    planModel: model,
    planInstruct: 'plan-instruct',
    toolset: { tools, close: async () => void closed++ },
    maxLoop,
  });
  const events: RunnerEvent[] = [];
  let error: unknown;
  try {
    for await (const ev of runner.run(ctx())) events.push(...(Array.isArray(ev) ? ev : [ev]));
  } catch (err) {
    error = err;
  }
  return { events, calls, closed, error };
}

const kinds = (events: RunnerEvent[]) =>
  events.map((e) =>
    e.type === 'tool_call' ? `tool:${e.call.function.name}` : `${e.type}:${e.text}`,
  );

describe('ReAct: the loop (spec 7.6.2)', () => {
  it('two tools, then Final Answer: tool-call events, then the summariser streams the answer', async () => {
    const weather = tool('get_weather', 'link', () => [{ observation: { temp: 20 } }]);
    const search = tool('search', 'link', (a) => [{ observation: { hits: [a.q] } }]);
    const r = await run(
      [
        [
          { reasoning: 'r1' },
          'Thought: weather\nAction: get_weather\nAction Input: {"city": "Hefei"}',
        ],
        ['Thought: search too\nAction: search\nAction Input: {"q": "parks"}\nObservation: fake'],
        ['Thought: enough\nFinal Answer: ignored'],
        [{ reasoning: 'sum' }, 'It is ', '20 degrees.'],
      ],
      [weather, search],
    );
    expect(r.error).to.equal(undefined);
    expect(kinds(r.events)).to.deep.equal([
      'reasoning:r1',
      'tool:get_weather',
      'tool:search',
      'reasoning:sum',
      'content:It is ',
      'content:20 degrees.',
    ]);
    expect(weather.calls).to.deep.equal([{ city: 'Hefei' }]);
    expect(search.calls).to.deep.equal([{ q: 'parks' }]);
    // planner calls use the planner model and see the growing scratchpad; the summariser the answer model
    expect(r.calls.map((c) => c.model.domain)).to.deep.equal([
      'plan-m',
      'plan-m',
      'plan-m',
      'answer-m',
    ]);
    expect(r.calls[0]!.messages[0]!.content).to.include('plan-instruct');
    expect(r.calls[1]!.messages[1]!.content).to.include('Observation: {"temp": 20}');
    expect(r.calls[2]!.messages[1]!.content).to.include('Observation: {"hits": ["parks"]}');
    expect(r.calls[3]!.messages[0]!.content).to.include('answer-instruct');
    expect(r.calls[3]!.messages[1]!.content).to.include(
      '"call tool": {"name": "search", "input": {"q": "parks"}}',
    );
    expect(r.calls[3]!.messages[1]!.content).to.include(
      '\n3.{\n    "think": "enough",\n    "call tool": null',
    );
    const tc = r.events[1]!;
    expect(tc.type === 'tool_call' && tc.call).to.deep.include({ type: 'tool', reason: 'weather' });
    expect(tc.model).to.equal('plan-m');
    expect(r.closed).to.equal(1);
  });

  it('a direct answer on loop 1 is streamed as content; no tool, no summariser', async () => {
    const t = tool('search', 'link', () => [{ observation: { x: 1 } }]);
    const r = await run([['Thought: easy\nFinal Answer: Hi', ' there']], [t]);
    expect(kinds(r.events)).to.deep.equal(['content: Hi', 'content: there']);
    expect(r.calls).to.have.length(1);
    expect(t.calls).to.have.length(0);
  });

  it('the loop limit hands the steps to the summariser', async () => {
    const t = tool('search', 'link', () => [{ observation: { x: 1 } }]);
    const step = 'Thought: again\nAction: search\nAction Input: {}';
    const r = await run([[step], [step], ['summary']], [t], 2);
    expect(kinds(r.events)).to.deep.equal(['tool:search', 'tool:search', 'content:summary']);
    expect(r.calls[2]!.messages[1]!.content).to.include('\n2.{');
  });

  it('max_loop <= 0 runs the summariser at once', async () => {
    const t = tool('search', 'link', () => [{ observation: { x: 1 } }]);
    for (const maxLoop of [0, -3]) {
      const r = await run([['only summary']], [t], maxLoop);
      expect(kinds(r.events)).to.deep.equal(['content:only summary']);
      expect(r.calls[0]!.model.domain).to.equal('answer-m');
    }
  });

  it('an empty tool output ends the run without an answer', async () => {
    const t = tool('search', 'link', () => [{ observation: {} }]);
    const r = await run([['Thought: t\nAction: search\nAction Input: {}']], [t]);
    expect(kinds(r.events)).to.deep.equal(['tool:search']);
    expect(r.calls).to.have.length(1);
    expect(r.error).to.equal(undefined);
  });

  it('malformed planner output fails the run with 40022', async () => {
    const t = tool('search', 'link', () => [{ observation: { x: 1 } }]);
    const r = await run([['I will just chat.']], [t]);
    expect((r.error as AgentError).code).to.equal(CODES.COT_FORMAT.code);
    expect(r.closed).to.equal(1);
  });

  it('workflow frames: tool call on the first frame, every frame streamed, planner sees the first', async () => {
    const wf = tool('flow', 'workflow', () => [
      { observation: { content: 'A', reasoning_content: '' }, content: 'A' },
      { observation: { content: 'B', reasoning_content: 'why' }, content: 'B', reasoning: 'why' },
    ]);
    const r = await run(
      [
        ['Thought: flow\nAction: flow\nAction Input: {"n": 1}'],
        ['Thought: ok\nFinal Answer: x'],
        ['S'],
      ],
      [wf],
    );
    expect(kinds(r.events)).to.deep.equal([
      'tool:flow',
      'content:A',
      'reasoning:why',
      'content:B',
      'content:S',
    ]);
    const tc = r.events[0]!;
    expect(tc.type === 'tool_call' && tc.call.type).to.equal('workflow');
    expect(tc.type === 'tool_call' && tc.call.function.response).to.equal(
      '{"content": "A", "reasoning_content": ""}',
    );
    expect(r.calls[1]!.messages[1]!.content).to.include(
      'Observation: {"content": "A", "reasoning_content": ""}',
    );
  });

  it('a workflow error frame becomes the observation and stops the workflow', async () => {
    const wf = tool('flow', 'workflow', () => [
      { observation: { content: 'A', reasoning_content: '' }, content: 'A' },
      { observation: { code: 20001, message: 'node failed' }, error: true },
      { observation: { content: 'never' }, content: 'never' },
    ]);
    const r = await run(
      [['Thought: flow\nAction: flow\nAction Input: {}'], ['Final Answer: x'], ['S']],
      [wf],
    );
    expect(kinds(r.events)).to.deep.equal(['tool:flow', 'content:A', 'content:S']);
    expect(r.calls[1]!.messages[1]!.content).to.include(
      'Observation: {"code": 20001, "message": "node failed"}',
    );
  });
});
