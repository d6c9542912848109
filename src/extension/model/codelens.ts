/**
 * Where the spec CodeLenses go and what they say (vscode-free): above the spec's root object,
 * "▶ Fine-tune" (when the spec has an adapter, or is too broken to tell: the run then reports the
 * problem), "Score layers", and "Compare variants" (when it lists variants). While a fine-tune of the
 * spec runs, its lens shows the progress and a "Cancel" lens follows.
 */
import { parseTree } from 'jsonc-parser/lib/esm/main.js';
import { positionAt, type Position } from './spec-errors';

export type SpecLensKind = 'train' | 'running' | 'cancel' | 'score' | 'compare';

export interface SpecLens {
  kind: SpecLensKind;
  /** 0-based position the lens sits above. */
  position: Position;
  title: string;
}

export interface RunningJob {
  done: number;
  total: number;
}

export function lensTitle(kind: SpecLensKind, running?: RunningJob): string {
  switch (kind) {
    case 'train':
      return '▶ Fine-tune';
    case 'running':
      return running && running.total > 0 ? `$(sync~spin) Fine-tuning ${running.done}/${running.total}` : '$(sync~spin) Fine-tuning…';
    case 'cancel':
      return 'Cancel';
    case 'score':
      return 'Score layers';
    case 'compare':
      return 'Compare variants';
  }
}

/** The lenses for a spec's text; `running` when a fine-tune of this spec is in progress. */
export function specLenses(text: string, running?: RunningJob): SpecLens[] {
  const root = parseTree(text, [], { allowTrailingComma: true });
  const isObject = root?.type === 'object';
  const keys = new Set(isObject ? (root.children ?? []).map((p) => p.children?.[0]?.value as unknown).filter((k): k is string => typeof k === 'string') : []);
  // Above the line of the root `{` (after any leading blank lines); the top when there is none.
  const first = text.search(/\S/);
  const position = positionAt(text, isObject ? root.offset : Math.max(0, first));
  const kinds: SpecLensKind[] = [];
  const trainable = !isObject || keys.has('adapter') || !keys.has('variants');
  if (running) kinds.push('running', 'cancel');
  else if (trainable) kinds.push('train');
  kinds.push('score');
  if (keys.has('variants')) kinds.push('compare');
  return kinds.map((kind) => ({ kind, position: { line: position.line, character: 0 }, title: lensTitle(kind, running) }));
}
