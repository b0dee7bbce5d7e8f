// Reading the planner (spec 7.6.3) and parsing one step of its output (spec 7.6.4). Pure.
import { AgentError, CODES } from '../errors.js';
import type { LlmDelta } from '../llm.js';
import { parseBoundedJson } from '../../schema/json.js';

/** The markers the planner writes; only these are behaviour, the prompt around them is ours. */
export const THOUGHT = 'Thought:';
export const ACTION = 'Action:';
export const ACTION_INPUT = 'Action Input:';
export const OBSERVATION = 'Observation:';
export const FINAL_ANSWER = 'Final Answer:';

export interface ParsedStep {
  thought: string;
  action: string;
  actionInput: Record<string, unknown>;
  finished: boolean;
}

function formatError(why: string): AgentError {
  return new AgentError(CODES.COT_FORMAT, undefined, { origin: { message: why, name: 'react' } });
}

/** Python's `text.split(marker)` */
const split = (text: string, marker: string) => text.split(marker);

/**
 * Parses one planner step. A finished step (`Final Answer:`) has a thought only; any other must
 * name exactly one known tool and give a JSON object as its input, else 40022.
 */
export function parseStep(text: string, toolNames: readonly string[]): ParsedStep {
  if (text.includes(FINAL_ANSWER)) {
    const thought = text.includes(THOUGHT)
      ? split(split(text, THOUGHT)[1]!, FINAL_ANSWER)[0]!.trim()
      : '';
    return { thought, action: '', actionInput: {}, finished: true };
  }
  const thought = text.includes(THOUGHT) ? split(split(text, THOUGHT)[1]!, ACTION)[0]!.trim() : '';
  if (!text.includes(ACTION) || !text.includes(ACTION_INPUT)) {
    throw formatError(`no "${ACTION}" and "${ACTION_INPUT}" in the planner output`);
  }
  const byAction = split(text, ACTION);
  if (byAction.length !== 2) throw formatError(`"${ACTION}" appears ${byAction.length - 1} times`);
  const byInput = split(byAction[1]!, ACTION_INPUT);
  if (byInput.length !== 2)
    throw formatError(`"${ACTION_INPUT}" appears ${byInput.length - 1} times after "${ACTION}"`);
  const action = byInput[0]!.trim();
  if (!toolNames.some((n) => n.trim() === action))
    throw formatError(`unknown tool ${JSON.stringify(action)}`);
  const inputText = split(byInput[1]!, OBSERVATION)[0]!.trim();
  let actionInput: unknown;
  try {
    actionInput = parseBoundedJson(inputText);
  } catch {
    throw formatError(`the action input is not JSON: ${JSON.stringify(inputText.slice(0, 200))}`);
  }
  if (typeof actionInput !== 'object' || actionInput === null || Array.isArray(actionInput)) {
    throw formatError('the action input is not a JSON object');
  }
  return { thought, action, actionInput: actionInput as Record<string, unknown>, finished: false };
}

export type ReaderEvent = { type: 'content' | 'reasoning'; text: string };

/**
 * Reads one streamed planner completion (spec 7.6.3). The planner's own text is collected, never
 * shown; its reasoning_content is. On the first loop a `Final Answer:` switches to the direct
 * answer: the text after the marker and everything after it is answer content.
 */
export class PlannerReader {
  /** The planner text of this step (what parseStep reads). */
  stepText = '';
  /** Loop 1 only: the planner answered directly; the run ends after this completion. */
  directAnswer = false;

  constructor(private readonly loop: number) {}

  /** Handles one delta: what to emit, and whether to stop reading the completion. */
  feed(d: LlmDelta): { events: ReaderEvent[]; stop: boolean } {
    if (this.directAnswer && d.content)
      return { events: [{ type: 'content', text: d.content }], stop: false };
    if (d.reasoning) return { events: [{ type: 'reasoning', text: d.reasoning }], stop: false };
    this.stepText += d.content ?? '';
    if (this.loop === 1 && this.stepText.includes(FINAL_ANSWER)) {
      this.directAnswer = true;
      const answer = split(this.stepText, FINAL_ANSWER)[1]!;
      return { events: answer ? [{ type: 'content', text: answer }] : [], stop: false };
    }
    const stop = this.stepText.includes(OBSERVATION) || this.stepText.includes(FINAL_ANSWER);
    return { events: [], stop };
  }
}
