// The steps of a ReAct run and their two renderings: the planner's scratchpad (spec 7.6.1, the
// markers the planner is asked to write) and the summariser's "reasoning process" (spec 7.7).
import { pyJson } from '../chunks.js';

export interface Step {
  thought: string;
  /** The tool name ("" for a finished step). */
  action: string;
  actionInput: Record<string, unknown>;
  /** The tool's answer (the observation); undefined for a finished step. */
  observation?: unknown;
  /** The planner wrote `Final Answer:`. */
  finished: boolean;
}

/**
 * Completed steps as the planner wrote them, each followed by its observation:
 * `Thought: ..\nAction: ..\nAction Input: <json>\nObservation: <json>`, joined by "\n".
 */
export function renderScratchpad(steps: readonly Step[]): string {
  return steps
    .map((s) =>
      s.finished
        ? `Thought: ${s.thought}`
        : `Thought: ${s.thought}\nAction: ${s.action}\nAction Input: ${pyJson(s.actionInput)}\nObservation: ${pyJson(s.observation)}`,
    )
    .join('\n');
}

/** One step of the summariser's reasoning process, numbered from 1 (spec 7.7 layout). */
export function renderSummaryStep(step: Step, i: number): string {
  const tool = step.finished
    ? 'null'
    : `{"name": "${step.action}", "input": ${pyJson(step.actionInput)}}`;
  const response = step.finished ? 'null' : pyJson(step.observation);
  return `\n${i}.{\n    "think": "${step.thought}",\n    "call tool": ${tool},\n    "tool response": ${response}\n}\n`;
}

export function renderSummarySteps(steps: readonly Step[]): string {
  return steps.map((s, i) => renderSummaryStep(s, i + 1)).join('\n');
}
