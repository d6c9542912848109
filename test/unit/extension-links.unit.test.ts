/** Command links in notification text (src/extension/model/links.ts): the fine-tune progress notification's "Open Dashboard". */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandLink } from '../../src/extension/model/links';

describe('command links', () => {
  it('encodes the arguments so that the link survives any path (spaces, parentheses, brackets)', () => {
    const dir = '/w/runs (old)/tiny [2]-20250101-120000';
    const link = commandLink('Open Dashboard', 'peftLab.openDashboard', [dir]);
    const m = /^\[Open Dashboard\]\(command:peftLab\.openDashboard\?([^()\s]+)\)$/.exec(link);
    assert.ok(m, link);
    assert.deepEqual(JSON.parse(decodeURIComponent(m[1]!)), [dir]);
  });
});
