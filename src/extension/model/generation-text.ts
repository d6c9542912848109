/** The Markdown document "Try the Model…" opens: the prompt, then each model's text (vscode-free). */
import type { GenerateResult } from '../../protocol';

/** A code fence longer than any run of backticks in `text`, so the text cannot close it. */
function fenced(text: string): string {
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return `${fence}text\n${text}\n${fence}`;
}

export function generationMarkdown(runName: string, r: GenerateResult, settings: string): string {
  const parts = [`# ${runName}: ${r.chat ? 'chat' : 'prompt'}`, '', fenced(r.prompt), ''];
  if (r.chat) parts.push('Given to the model as a user turn of its chat template:', '', fenced(r.input), '');
  for (const o of r.outputs) {
    const why = o.stop === 'eos' ? 'ended' : 'token limit';
    parts.push(`## ${o.label} (${o.tokens} token${o.tokens === 1 ? '' : 's'}, ${why})`, '', fenced(o.text), '');
  }
  parts.push(`_${settings}_`, '');
  return parts.join('\n');
}
