/** Command links in notification text (vscode-free): notifications render `[label](command:id?args)`, progress ones included, whose API has no buttons. */

/** A markdown link that runs `command` with `args` (JSON, URI-encoded; parentheses too, which would end the link). */
export function commandLink(label: string, command: string, args: readonly unknown[]): string {
  const query = encodeURIComponent(JSON.stringify(args)).replace(/\(/g, '%28').replace(/\)/g, '%29');
  return `[${label}](command:${command}?${query})`;
}
