/**
 * `data.promptTemplate`: a prompt written from several fields of a row, for instruction data such
 * as Alpaca's (instruction, input, output) or Dolly's (instruction, context, response). `{name}`
 * stands for the row's field `name` as text; `{{` and `}}` for literal braces.
 */

export type TemplatePart = { text: string } | { field: string };

/** The template's parts, or a message saying what is wrong with it. */
export function parsePromptTemplate(template: string): TemplatePart[] | string {
  const parts: TemplatePart[] = [];
  let text = '';
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if ((c === '{' || c === '}') && template[i + 1] === c) {
      text += c;
      i++;
    } else if (c === '{') {
      const end = template.indexOf('}', i);
      if (end < 0) return `"{" at character ${i + 1} is not closed (write "{{" for a literal brace)`;
      const field = template.slice(i + 1, end);
      if (!/^[^{}]+$/u.test(field) || field.trim() !== field) return `"{${field}}" at character ${i + 1} is not a field name`;
      if (text) parts.push({ text });
      text = '';
      parts.push({ field });
      i = end;
    } else if (c === '}') {
      return `"}" at character ${i + 1} closes nothing (write "}}" for a literal brace)`;
    } else text += c;
  }
  if (text) parts.push({ text });
  if (!parts.some((p) => 'field' in p)) return 'names no field: write {field} where a row\'s field goes (e.g. "{instruction}")';
  return parts;
}

/** The prompt of a row; `value` gives a field's text (and throws, naming it, when the row lacks it). */
export function renderPromptTemplate(parts: readonly TemplatePart[], value: (field: string) => string): string {
  return parts.map((p) => ('field' in p ? value(p.field) : p.text)).join('');
}
