// The one tool interface behind every plugin of spec 8 (link, MCP, workflow). The planner sees a
// tool only through its `schemaTemplate` text; the ReAct runner calls `run()` and reads frames.
import { pyJson } from '../chunks.js';
import type { RunContext } from '../runners/types.js';

export type PluginType = 'link' | 'mcp' | 'workflow';

/** `{"type":"object","properties":{...},"required":[...]}` as the planner sees it. */
export interface ToolParameters {
  type: 'object';
  properties: Record<string, unknown>;
  required: string[];
}

/**
 * One frame of a tool run. Link and MCP tools yield exactly one (the service's whole answer);
 * a workflow yields one per streamed frame. The first frame's `observation` is what the planner
 * sees; a frame with `error` replaces it and ends the run of the tool.
 */
export interface ToolFrame {
  observation: unknown;
  /** The frame reports a failure (workflow `code != 0`): it is the observation, the tool stops. */
  error?: boolean;
  /** Answer text streamed to the client as content (workflow output). */
  content?: string;
  /** "Thinking" text streamed to the client as reasoning_content (workflow output). */
  reasoning?: string;
}

export interface Tool {
  readonly name: string;
  readonly description: string;
  readonly typ: PluginType;
  readonly parameters: ToolParameters;
  /** `tool_name:<name>, tool_description:<description>, tool_parameters:<json>` (spec 8). */
  readonly schemaTemplate: string;
  /**
   * Runs the tool with the planner's action input. Transport failures throw AgentErrors
   * (timeouts: the plugin's code of spec 5.1; anything else 40500); a failure the service reports
   * inside a 200 answer is a normal frame (the observation), not an error.
   */
  run(args: Record<string, unknown>, ctx: RunContext): AsyncIterable<ToolFrame>;
}

/** The tools of one request, and what they hold open (MCP sessions), released by `close()`. */
export interface Toolset {
  readonly tools: readonly Tool[];
  close(): Promise<void>;
}

export const EMPTY_TOOLSET: Toolset = { tools: [], close: () => Promise.resolve() };

/** The planner's view of a tool (spec 8; Python json.dumps spacing, non-ASCII raw). */
export function schemaTemplate(name: string, description: string, parameters: unknown): string {
  return `tool_name:${name}, tool_description:${description}, tool_parameters:${pyJson(parameters)}`;
}

/** A tool from its name, description, parameters and run function. */
export function makeTool(
  typ: PluginType,
  name: string,
  description: string,
  parameters: ToolParameters,
  run: Tool['run'],
  template?: string,
): Tool {
  return {
    name,
    description,
    typ,
    parameters,
    schemaTemplate: template ?? schemaTemplate(name, description, parameters),
    run,
  };
}
