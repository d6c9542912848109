/** Wire checks of the analysis jobs' params (`importance`, `allocate`, `localize`, `merge`) for the job manager. */
import { IMPORTANCE_METHODS, MERGE_METHODS } from '../../../src/protocol';

type Raw = Record<string, unknown>;

const isStr = (v: unknown) => typeof v === 'string' && v !== '';
const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** Why `p` (whose kind is one of the analysis kinds) is not valid, or undefined. */
export function analysisJobProblem(p: Raw): string | undefined {
  const kind = String(p.kind);
  const str = (key: string, optional = false) => ((optional && p[key] === undefined) || isStr(p[key]) ? undefined : `${kind} job: '${key}' must be a non-empty string`);
  const strs = (key: string, optional = false) =>
    (optional && p[key] === undefined) || (Array.isArray(p[key]) && (p[key] as unknown[]).length > 0 && (p[key] as unknown[]).every(isStr))
      ? undefined
      : `${kind} job: '${key}' must be a non-empty array of non-empty strings`;
  const num = (key: string, min = -Infinity, int = false) =>
    p[key] === undefined || (isNum(p[key]) && (p[key] as number) >= min && (!int || Number.isInteger(p[key]))) ? undefined : `${kind} job: '${key}' must be ${int ? 'an integer' : 'a number'} ≥ ${min}`;
  const nums = (key: string) =>
    p[key] === undefined || (Array.isArray(p[key]) && (p[key] as unknown[]).length > 0 && (p[key] as unknown[]).every(isNum)) ? undefined : `${kind} job: '${key}' must be a non-empty array of numbers`;
  const oneOf = (key: string, values: readonly string[]) =>
    p[key] === undefined || values.includes(p[key] as string) ? undefined : `${kind} job: '${key}' must be one of ${values.join(', ')}`;
  switch (kind) {
    case 'importance': {
      if ((p.data === undefined) === (p.inputs === undefined)) return `importance job: give exactly one of 'data' and 'inputs'`;
      const methods = p.methods;
      if (methods !== undefined && !(Array.isArray(methods) && methods.length > 0 && methods.every((m) => (IMPORTANCE_METHODS as readonly unknown[]).includes(m))))
        return `importance job: 'methods' must be a non-empty array of ${IMPORTANCE_METHODS.join(', ')}`;
      if (p.activations !== undefined && typeof p.activations !== 'boolean') return `importance job: 'activations' must be a boolean`;
      return str('model') ?? str('out') ?? str('spec', true) ?? str('adapter', true) ?? str('data', true) ?? str('inputs', true) ?? num('batches', 1, true) ?? num('batchSize', 1, true) ?? num('seed', 0, true);
    }
    case 'allocate':
      return (
        str('importance') ?? strs('budgets') ?? str('out') ?? oneOf('method', IMPORTANCE_METHODS) ?? num('r', 1, true) ?? num('alphaRatio', 0) ?? num('beta', 0) ?? num('loraAlpha', 0) ??
        oneOf('candidates', ['all', 'linear']) ?? nums('ranks') ?? num('rankScale', 0)
      );
    case 'localize':
      if (p.runs === undefined && p.finetuned === undefined) return `localize job: give 'runs' or 'finetuned'`;
      return (
        str('base') ?? str('out') ?? strs('runs', true) ?? strs('finetuned', true) ?? str('data', true) ?? str('eval', true) ?? nums('sparsity') ?? num('epochs', 1, true) ?? num('lr', 0) ??
        num('bias') ?? num('batchSize', 1, true) ?? num('batches', 1, true) ?? num('maxRows', 1, true) ?? num('seed', 0, true)
      );
    case 'merge':
      return (
        str('base') ?? strs('runs') ?? str('out') ?? oneOf('method', MERGE_METHODS) ?? (p.method === undefined ? `merge job: 'method' is required` : undefined) ?? nums('weights') ?? num('lambda') ??
        num('density', 0) ?? num('top', 0) ?? num('bottom', 0) ?? num('alpha') ?? num('seed', 0, true) ?? str('data', true) ?? str('eval', true)
      );
    case 'evaluate':
      return strs('runs') ?? str('data') ?? str('out') ?? num('maxRows', 1, true) ?? num('batchSize', 1, true);
    default:
      return `job kind ${kind} is not an analysis job`;
  }
}
