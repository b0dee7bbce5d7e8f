// The ReAct runner's prompt texts: the planner (spec 7.6.1) and the summariser (spec 7.7). The
// wording is the project's own; what is behaviour are the markers the parser reads (Thought:,
// Action:, Action Input:, Observation:, Final Answer:) and the placeholders, replaced by plain
// substitution ({now}, {instruct}, {knowledge}, {tools}, {tool_names}, {chat_history},
// {question}, {scratchpad}, {steps}). The original's {r1_more} after "Begin!" is "" for every
// model, so it is left out.
import { formatNow } from '../../schema/datetime.js';
import { renderHistory, type ChatMessage } from '../history.js';
import type { LlmMessage } from '../llm.js';
import { fill } from '../prompts.js';
import type { Tool } from '../plugins/types.js';
import { renderScratchpad, renderSummarySteps, type Step } from './scratchpad.js';

/** Planner system prompt. `{{"key1": ...}}` stays literally doubled, as in the original. */
export const PLANNER_SYSTEM_PROMPT = `You are an agent that works through the user's request step by step, using the tools listed below when they help. You are given the conversation so far and a new question.

## Environment
- Current date and time: {now}

## Owner's instructions
Follow these unless they conflict with the rules further down:
{instruct}

## Retrieved knowledge
These passages were retrieved for the question; some may be off-topic or misleading:
{knowledge}

## Rules (they take precedence over the owner's instructions)
1. Work in rounds of Thought, Action, Action Input and Observation until you can answer, then finish with a Thought and the Final Answer.
2. Write each item on a single line that starts with its label.
3. Every round begins with "Thought:".
4. If no tool is needed, go straight from "Thought:" to "Final Answer:".
5. Stop after "Action Input:": the Observation is written for you by the tool.

## Format
Previous chat history:
<the conversation so far>
Question: <the question to answer>
Thought: <what to do next, and why>
Action: <exactly one of ({tool_names})>
Action Input: <the tool's arguments as single-line JSON, e.g. {{"key1": "value1", ...}}>
Observation: <the tool's result>
... (the Thought / Action / Action Input / Observation round may repeat)
Thought: <I can answer now>
Final Answer: <the answer to the question>

## Tools
{tools}

Begin!`;

/** Planner user prompt: history, question and the steps so far. */
export const PLANNER_USER_PROMPT = `
Previous chat history:
{chat_history}

Question: {question}
{scratchpad}
`;

/** Summariser system prompt: a Q&A prompt that answers from the reasoning process. */
export const SUMMARY_SYSTEM_PROMPT = `You are a question-answering assistant. You are given the conversation so far, a new question, and the reasoning process an agent went through for it: its thoughts, the tools it called and what they returned. Write the answer to the new question.

## Context
- Current date and time: {now}
- Guidance from the bot owner: {instruct}

## How to answer
1. Ground the answer in the reasoning process and the tool responses.
2. Retrieved knowledge may be incomplete or contain irrelevant passages; decide for yourself whether and how to use it.
3. Reply in the same language the question is written in.
4. Be correct, specific and complete.
5. Adapt your tone to the conversation.

## Retrieved knowledge
{knowledge}

Now answer.`;

/** Summariser user prompt: the reasoning process, the history and the question. */
export const SUMMARY_USER_PROMPT = `

How the question was worked on:
{steps}

Conversation so far:
{chat_history}

New question: {question}
`;

export interface PlannerPromptInput {
  instruct: string;
  knowledge: string;
  tools: readonly Pick<Tool, 'name' | 'schemaTemplate'>[];
  question: string;
  history: readonly ChatMessage[];
}

/** The system prompt of a run (only the scratchpad changes from one loop to the next). */
export function plannerSystem(input: PlannerPromptInput, now = new Date()): string {
  return fill(PLANNER_SYSTEM_PROMPT, {
    now: formatNow(now),
    instruct: input.instruct || 'None',
    knowledge: input.knowledge || 'None',
    tools: input.tools.map((t) => t.schemaTemplate).join('\n'),
    tool_names: input.tools.map((t) => t.name).join(','),
  });
}

export function plannerMessages(
  system: string,
  input: PlannerPromptInput,
  steps: readonly Step[],
): LlmMessage[] {
  const user = fill(PLANNER_USER_PROMPT, {
    chat_history: renderHistory(input.history),
    question: input.question,
    scratchpad: renderScratchpad(steps),
  });
  return [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
}

export interface SummaryPromptInput {
  instruct: string;
  knowledge: string;
  question: string;
  history: readonly ChatMessage[];
}

export function summaryMessages(
  input: SummaryPromptInput,
  steps: readonly Step[],
  now = new Date(),
): LlmMessage[] {
  const system = fill(SUMMARY_SYSTEM_PROMPT, {
    now: formatNow(now),
    instruct: input.instruct,
    knowledge: input.knowledge,
  });
  const user = fill(SUMMARY_USER_PROMPT, {
    steps: renderSummarySteps(steps),
    chat_history: renderHistory(input.history),
    question: input.question,
  });
  return [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
}
