/** What each architecture accepts as input, for checking a batch file before the compute. */
import type { InputLimits } from '../io/tensors';
import type { ModelConfig } from './config';

export function inputLimits(cfg: ModelConfig): InputLimits {
  switch (cfg.modelType) {
    case 'gpt2':
      return { vocab: cfg.vocabSize, positions: { max: cfg.maxPositions, key: 'n_positions' }, labels: { max: cfg.vocabSize, what: 'the vocabulary' }, rightPaddedMask: true };
    case 'opt':
      return { vocab: cfg.vocabSize, positions: { max: cfg.maxPositions, key: 'max_position_embeddings' }, labels: { max: cfg.vocabSize, what: 'the vocabulary' }, rightPaddedMask: true };
    case 'gpt_neox':
    case 'phi':
    case 'bloom':
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'gemma':
    case 'gemma2':
    case 'gemma3_text':
    case 'phi3':
    case 'smollm3':
    case 'olmo2':
    case 'granite':
    case 'stablelm':
      // RoPE has no table to run off: transformers takes sequences past max_position_embeddings too.
      return { vocab: cfg.vocabSize, labels: { max: cfg.vocabSize, what: 'the vocabulary' }, rightPaddedMask: true };
    case 'bert':
    case 'roberta':
    case 'xlm-roberta':
    case 'distilbert':
      return {
        vocab: cfg.vocabSize,
        // RoBERTa's positions start at pad_token_id + 1.
        positions: { max: cfg.positionsAfterPadding ? cfg.maxPositions - cfg.padTokenId! - 1 : cfg.maxPositions, key: 'max_position_embeddings' },
        tokenTypes: cfg.typeVocabSize,
        ...classLabels(cfg.problemType, cfg.numLabels),
      };
    case 'deberta-v2':
      // Token types only where the model embeds them (v3 has none and ignores its tokenizer's); a length
      // limit only with absolute positions (relative ones saturate at their buckets).
      return {
        vocab: cfg.vocabSize,
        ...(cfg.positionBiasedInput ? { positions: { max: cfg.maxPositions, key: 'max_position_embeddings' } } : {}),
        ...(cfg.typeVocabSize > 0 ? { tokenTypes: cfg.typeVocabSize } : {}),
        ...classLabels(cfg.problemType, cfg.numLabels),
      };
    case 'modernbert':
      // RoPE: no table to run off (max_position_embeddings is what it was trained on); no token types.
      return { vocab: cfg.vocabSize, ...classLabels(cfg.problemType, cfg.numLabels) };
    case 'vit':
      return classLabels(cfg.problemType, cfg.numLabels);
  }
}

/** Class indices for single-label classification; regression and multi-label targets are values, not indices. */
function classLabels(problemType: string, numLabels: number): InputLimits {
  return problemType === 'single_label_classification' ? { labels: { max: numLabels, what: 'the classes' } } : { valueLabels: true };
}
