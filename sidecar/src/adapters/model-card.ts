/**
 * The README.md an exported adapter folder gets, as PEFT's save_pretrained writes one: front matter
 * naming the base model and the library, then how to load the adapter with PEFT — for a classifier,
 * with the head size the base must be built with (num_labels is in no PEFT file).
 */
import type { ModelConfig } from '../models/config';

export function adapterModelCard(peftConfig: Record<string, unknown>, model: ModelConfig): string {
  const base = String(peftConfig.base_model_name_or_path ?? '');
  const type = String(peftConfig.peft_type ?? 'adapter');
  const task = peftConfig.task_type;
  const head = 'numLabels' in model ? model : undefined;
  const cls = task === 'CAUSAL_LM' ? 'AutoModelForCausalLM' : model.modelType === 'vit' ? 'AutoModelForImageClassification' : 'AutoModelForSequenceClassification';
  // A classifier's base must be built with the run's head (a fresh or resized one is saved in modules_to_save).
  const args = head ? `, num_labels=${head.numLabels}${head.problemType !== 'single_label_classification' ? `, problem_type="${head.problemType}"` : ''}` : '';
  const yamlBase = JSON.stringify(base);
  return [
    '---',
    `base_model: ${yamlBase}`,
    'library_name: peft',
    'tags:',
    `- ${type.toLowerCase()}`,
    '- peft-lab',
    '---',
    '',
    `# ${type} adapter for ${base || 'its base model'}`,
    '',
    `Trained with PEFT Lab on a ${model.architecture || model.modelType} base. Load it with Hugging Face PEFT:`,
    '',
    '```python',
    `from transformers import ${cls}`,
    'from peft import PeftModel',
    '',
    `base = ${cls}.from_pretrained(${yamlBase}${args})`,
    'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
    '```',
    '',
  ].join('\n');
}
