// The chat runner (spec 7.5): one streamed completion of [system, user] with the project's own
// prompt texts; every reasoning piece becomes a reasoning event, every content piece a content
// event (model = the answer model's domain).
import type { RunnerEvent, RunnerItem } from '../chunks.js';
import { formatNow } from '../../schema/datetime.js';
import { renderHistory } from '../history.js';
import { deltaBatches, type LlmMessage } from '../llm.js';
import { CHAT_SYSTEM_PROMPT, CHAT_USER_PROMPT, fill } from '../prompts.js';
import type { RunContext, Runner, RunnerInputs } from './types.js';

/** The two messages the chat runner sends (exported for tests). */
export function chatMessages(
  input: Omit<RunnerInputs, 'llm' | 'model'>,
  now = new Date(),
): LlmMessage[] {
  const system = fill(CHAT_SYSTEM_PROMPT, {
    now: formatNow(now),
    instruct: input.instruct,
    knowledge: input.knowledge,
  });
  const user = fill(CHAT_USER_PROMPT, {
    chat_history: renderHistory(input.history),
    question: input.question,
  });
  return [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
}

export function chatRunner(input: RunnerInputs): Runner {
  return {
    name: 'chat',
    async *run(ctx: RunContext): AsyncGenerator<RunnerItem> {
      const model = input.model.domain;
      const messages = chatMessages(input);
      for await (const batch of deltaBatches(
        input.llm,
        input.model,
        messages,
        ctx.signal,
        ctx.llm,
      )) {
        const out: RunnerEvent[] = [];
        for (const d of batch) {
          if (d.reasoning !== undefined) out.push({ type: 'reasoning', text: d.reasoning, model });
          if (d.content !== undefined) out.push({ type: 'content', text: d.content, model });
        }
        if (out.length > 0) yield out;
      }
    },
  };
}
