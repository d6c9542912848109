/** The Markdown document "Try the Model…" opens: the prompt, then each model's text or classes (vscode-free). */
import type { GenerateResult } from '../../protocol';

/** A code fence longer than any run of backticks in `text`, so the text cannot close it. */
function fenced(text: string): string {
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return `${fence}text\n${text}\n${fence}`;
}

export function generationMarkdown(runName: string, r: GenerateResult, settings: string): string {
  const parts = [`# ${runName}: ${r.chat ? 'chat' : 'prompt'}`, '', fenced(r.prompt), ''];
  if (r.pair !== undefined) parts.push('Paired with:', '', fenced(r.pair), '');
  if (r.chat) parts.push('Given to the model as a user turn of its chat template:', '', fenced(r.input), '');
  for (const o of r.outputs) {
    if (o.value !== undefined) {
      // A regression model: its value.
      parts.push(`## ${o.label}: ${o.text}`, '');
      continue;
    }
    if (o.classes) {
      // A text classifier: its classes, most probable first (the first five).
      parts.push(`## ${o.label}: ${o.text}`, '', '| class | probability |', '| --- | ---: |');
      for (const c of o.classes.slice(0, 5)) parts.push(`| ${c.name.replace(/[|\\]/g, (m) => `\\${m}`)} | ${c.p.toFixed(3)} |`);
      parts.push('');
      continue;
    }
    const why = o.stop === 'eos' ? 'ended' : 'token limit';
    parts.push(`## ${o.label} (${o.tokens} token${o.tokens === 1 ? '' : 's'}, ${why})`, '', fenced(o.text), '');
  }
  // How the text was generated (a classifier's classes need no such note).
  if (r.outputs.some((o) => !o.classes && o.value === undefined)) parts.push(`_${settings}_`, '');
  return parts.join('\n');
}
