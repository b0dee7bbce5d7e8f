// History rendering shared by every runner (spec 7.4): the conversation is never sent as separate
// messages; it is rendered into the user prompt as "User: ..." / "Assistant: ..." lines.

export interface ChatMessage {
  role: string;
  content: string;
}

/** What an empty history renders as (spec 7.4). */
export const EMPTY_HISTORY = '无';

/** `"User: <content>"` / `"Assistant: <content>"` (role title-cased) joined by "\n". */
export function renderHistory(history: readonly ChatMessage[]): string {
  if (history.length === 0) return EMPTY_HISTORY;
  return history.map((m) => `${titleCase(m.role)}: ${m.content}`).join('\n');
}

/** Python's str.title() for a role word: "user" -> "User", "assistant" -> "Assistant". */
function titleCase(word: string): string {
  return word
    .toLowerCase()
    .replace(/(^|[^a-z])([a-z])/g, (_m, pre: string, c: string) => pre + c.toUpperCase());
}

/** The runners' common inputs (spec 7.1): the last message is the question, the rest history. */
export function splitQuestion(messages: readonly ChatMessage[]): {
  question: string;
  history: ChatMessage[];
} {
  const last = messages[messages.length - 1];
  return { question: last?.content ?? '', history: messages.slice(0, -1) };
}
