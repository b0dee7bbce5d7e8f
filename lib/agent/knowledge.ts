// Knowledge retrieval before a run (spec 7.3) over the knowledge service's chunk query (spec 8.4):
// the query, reference expansion, grouping by document, the prompt text and the knowledge chunk.
// Both modes: OpenAPI (one query from the bot config) and custom (one query per knowledge item,
// concurrently, for the custom endpoint).
import type { Context } from '@opentelemetry/api';
import { isPlainObject } from '../schema/object.js';
import { requestIdHeader } from '../telemetry/context.js';
import { endRetrievalSpan, startRetrievalSpan } from '../telemetry/genai.js';
import { injectTraceHeaders } from '../telemetry/tracing.js';
import { pyJson, type RunnerEvent, type ToolCall } from './chunks.js';
import { AgentError, CODES } from './errors.js';
import { RunAbortedError } from './llm.js';

export type RagType = 'AIUI-RAG2' | 'CBG-RAG' | (string & {});

export interface KnowledgeQuery {
  query: string;
  repoIds: string[];
  docIds: string[];
  topK: number;
  threshold: number;
  ragType: RagType;
}

export interface KnowledgeClientOptions {
  /** CHUNK_QUERY_URL; empty = not configured (a query is then a 40500). */
  url: string;
  /** Spec 8.4: 40 s, then 40025. */
  timeoutMs?: number;
}

/** The request body of spec 8.4: `docIds` only for CBG-RAG, `topN` as a string. */
export function queryBody(q: KnowledgeQuery): Record<string, unknown> {
  const match: Record<string, unknown> = { repoId: q.repoIds, threshold: q.threshold };
  if (q.ragType === 'CBG-RAG') match.docIds = q.docIds;
  return { query: q.query, topN: String(q.topK), match, ragType: q.ragType };
}

export class KnowledgeClient {
  constructor(private readonly opts: KnowledgeClientOptions) {}

  /**
   * The service's JSON answer; `{}` without a query when there are no repo ids (spec 8.4). A
   * `retrieval` span (child of `trace`) covers the query.
   */
  async query(
    q: KnowledgeQuery,
    signal: AbortSignal,
    trace?: Context,
    requestId?: string,
  ): Promise<unknown> {
    if (q.repoIds.length === 0) return {};
    if (!this.opts.url) throw new AgentError(CODES.INTERNAL, 'CHUNK_QUERY_URL is not set');
    const { span, context } = startRetrievalSpan(trace, {
      repoIds: q.repoIds,
      topK: q.topK,
      query: q.query,
      url: this.opts.url,
    });
    let answer: unknown;
    let error: unknown;
    try {
      answer = await this.send(q, signal, context, requestId);
      return answer;
    } catch (err) {
      error = err;
      throw err;
    } finally {
      endRetrievalSpan(span, { documents: () => documentsOf(answer), error });
    }
  }

  private async send(
    q: KnowledgeQuery,
    signal: AbortSignal,
    trace: Context | undefined,
    requestId: string | undefined,
  ): Promise<unknown> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 40_000);
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      ...requestIdHeader(requestId),
    };
    injectTraceHeaders(trace, headers);
    let res: Response;
    try {
      res = await fetch(this.opts.url, {
        method: 'POST',
        headers,
        body: JSON.stringify(queryBody(q)),
        signal: AbortSignal.any([signal, timeout]),
      });
      if (res.status >= 400) {
        await res.body?.cancel().catch(() => {});
        throw new AgentError(CODES.INTERNAL, `knowledge query answered HTTP ${res.status}`);
      }
      return (await res.json()) as unknown;
    } catch (err) {
      if (err instanceof AgentError) throw err;
      if (signal.aborted) throw new RunAbortedError();
      if (timeout.aborted) throw new AgentError(CODES.KNOWLEDGE_QUERY, undefined, { cause: err });
      const why =
        err instanceof Error
          ? err.cause instanceof Error
            ? err.cause.message
            : err.message
          : String(err);
      throw new AgentError(CODES.INTERNAL, `knowledge query failed: ${why}`, { cause: err });
    }
  }
}

// ---- results -----------------------------------------------------------------------------------

/** The documents of an answer as gen_ai.retrieval.documents lists them (id and content). */
function documentsOf(resp: unknown): { id: string; content: string }[] {
  const data = isPlainObject(resp) ? resp.data : undefined;
  const results = isPlainObject(data) && Array.isArray(data.results) ? data.results : [];
  return results.filter(isPlainObject).map((r) => ({
    id: asText(r.docId),
    content: asText(r.content),
  }));
}

export interface MetadataItem {
  source_id: string;
  chunk: { chunk_context: string }[];
}

export interface KnowledgeResult {
  /** Grouped by document, first-seen order. */
  metadataList: MetadataItem[];
  /** Every chunk_context joined by "\n" (the prompt's {knowledge}). */
  text: string;
}

export const NO_KNOWLEDGE: KnowledgeResult = { metadataList: [], text: '' };

const asText = (v: unknown): string =>
  typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);

/**
 * Expands the references of a chunk's content: an image reference `<key>` becomes
 * `![alt](<link>)`, a table reference `<key>` becomes "\n" + content + "\n"; in the custom mode a
 * plain string reference `{key}` becomes `![alt](<value>)`. Every occurrence is replaced.
 */
export function expandReferences(
  content: string,
  references: unknown,
  mode: 'openapi' | 'custom',
): string {
  if (!isPlainObject(references)) return content;
  let out = content;
  for (const [key, ref] of Object.entries(references)) {
    if (isPlainObject(ref)) {
      if (ref.format === 'image') out = out.split(`<${key}>`).join(`![alt](${asText(ref.link)})`);
      else if (ref.format === 'table')
        out = out.split(`<${key}>`).join(`\n${asText(ref.content)}\n`);
    } else if (typeof ref === 'string' && mode === 'custom') {
      out = out.split(`{${key}}`).join(`![alt](${ref})`);
    }
  }
  return out;
}

/** Merges the answers of one or more queries (spec 7.3 "result processing"). */
export function processResults(
  responses: readonly unknown[],
  mode: 'openapi' | 'custom',
): KnowledgeResult {
  const byDoc = new Map<string, MetadataItem>();
  const contexts: string[] = [];
  for (const resp of responses) {
    const data = isPlainObject(resp) ? resp.data : undefined;
    const results = isPlainObject(data) && Array.isArray(data.results) ? data.results : [];
    for (const r of results) {
      if (!isPlainObject(r)) continue;
      const content = expandReferences(asText(r.content), r.references, mode);
      const context = `${asText(r.title)}\n${content}`;
      const docId = asText(r.docId);
      let item = byDoc.get(docId);
      if (!item) {
        item = { source_id: docId, chunk: [] };
        byDoc.set(docId, item);
      }
      item.chunk.push({ chunk_context: context });
      contexts.push(context);
    }
  }
  // The prompt text follows the grouped order, as the metadata list does.
  const metadataList = [...byDoc.values()];
  const text = metadataList.flatMap((m) => m.chunk.map((c) => c.chunk_context)).join('\n');
  return contexts.length === 0 ? NO_KNOWLEDGE : { metadataList, text };
}

/** The knowledge chunk's event (spec 4.2 step 1): a `knowledge` tool call, model "". */
export function knowledgeEvent(question: string, result: KnowledgeResult): RunnerEvent {
  const call: ToolCall = {
    index: 0,
    id: null,
    function: {
      arguments: pyJson({ query: question }),
      name: 'knowledge',
      response: pyJson({ metadata_list: result.metadataList }),
    },
    type: 'knowledge',
    reason: '',
  };
  return { type: 'tool_call', call, model: '' };
}

// ---- the two modes -----------------------------------------------------------------------------

/** OpenAPI mode: one query from the bot config (spec 7.3). */
export interface BotKnowledgeConfig {
  knowledge_config: { score_threshold: number; top_k: number };
  regular_config: { match: { repoId: string[]; docId: string[] }; rag: { type: string } };
}

export async function retrieveForBot(
  client: KnowledgeClient,
  cfg: BotKnowledgeConfig,
  question: string,
  signal: AbortSignal,
  trace?: Context,
  requestId?: string,
): Promise<KnowledgeResult> {
  const { repoId, docId } = cfg.regular_config.match;
  if (repoId.length === 0 && docId.length === 0) return NO_KNOWLEDGE;
  const resp = await client.query(
    {
      query: question,
      repoIds: repoId,
      docIds: docId,
      topK: cfg.knowledge_config.top_k,
      threshold: cfg.knowledge_config.score_threshold,
      ragType: cfg.regular_config.rag.type || 'AIUI-RAG2',
    },
    signal,
    trace,
    requestId,
  );
  return processResults([resp], 'openapi');
}

/** Custom mode: a `plugin.knowledge` item of the custom endpoint (spec 3.2). */
export interface KnowledgeItem {
  top_k: number;
  repo_type: number;
  match: { repo_ids: string[]; doc_ids: string[] };
}

export const ragTypeOf = (repoType: number): RagType => (repoType === 2 ? 'CBG-RAG' : 'AIUI-RAG2');

export async function retrieveForItems(
  client: KnowledgeClient,
  items: readonly KnowledgeItem[],
  question: string,
  signal: AbortSignal,
  trace?: Context,
  requestId?: string,
): Promise<KnowledgeResult> {
  const wanted = items.filter((k) => k.match.repo_ids.length > 0 || k.match.doc_ids.length > 0);
  if (wanted.length === 0) return NO_KNOWLEDGE;
  const responses = await Promise.all(
    wanted.map((k) =>
      client.query(
        {
          query: question,
          repoIds: k.match.repo_ids,
          docIds: k.match.doc_ids,
          topK: k.top_k || 3,
          threshold: 0.3,
          ragType: ragTypeOf(k.repo_type),
        },
        signal,
        trace,
        requestId,
      ),
    ),
  );
  return processResults(responses, 'custom');
}
