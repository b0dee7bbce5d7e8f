// The project's own prompt texts. Only the placeholders ({now}, {instruct}, {knowledge},
// {chat_history}, {question}) are behaviour (spec 7.4/7.5); the wording is ours. Placeholders are
// replaced by plain substitution, no escaping, each value inserted verbatim (may be empty).

/** Chat runner system prompt (spec 7.5: a Q&A assistant with hints, requirements, knowledge). */
export const CHAT_SYSTEM_PROMPT = `You are a question-answering assistant. Below you will find the conversation so far and a new question from the user. Answer the new question, using the context and guidance given here.

## Context
- Current date and time: {now}
- Guidance from the bot owner: {instruct}

## How to answer
1. Retrieved knowledge may be incomplete or contain irrelevant passages; decide for yourself whether and how to use it.
2. Reply in the same language the question is written in.
3. Be correct, specific and complete.
4. Adapt your tone to the conversation.

## Retrieved knowledge
{knowledge}

Now answer.`;

/** Chat runner user prompt: the rendered history and the question. */
export const CHAT_USER_PROMPT = `
Conversation so far:
{chat_history}

New question: {question}
`;

/**
 * Replaces every `{name}` of the given names in one pass: values are inserted verbatim (no `$`
 * patterns, no escaping), and a value that itself contains `{knowledge}` stays as it is.
 */
export function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{([a-z_]+)\}/g, (whole, name: string) =>
    Object.hasOwn(values, name) ? values[name]! : whole,
  );
}
