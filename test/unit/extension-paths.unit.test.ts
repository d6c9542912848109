/** Path containment (src/extension/model/paths.ts): what a panel may open, which run folders a deleted folder took along. */
import assert from 'node:assert/strict';
import { posix, win32 } from 'node:path';
import { describe, it } from 'node:test';
import { isUnder, isWithinAny } from '../../src/extension/model/paths';

describe('path containment', () => {
  it('a path is under a folder when it is the folder or inside it, not a sibling sharing a prefix', () => {
    assert.ok(isUnder('/w/runs/cmp', '/w/runs/cmp', posix));
    assert.ok(isUnder('/w/runs/cmp', '/w/runs/cmp/lora/status.json', posix));
    assert.ok(isUnder('/w/runs/cmp/', '/w/runs/cmp/lora', posix));
    assert.ok(!isUnder('/w/runs/cmp', '/w/runs/cmp-2/lora', posix));
    assert.ok(!isUnder('/w/runs/cmp', '/w/runs', posix));
    assert.ok(!isUnder('/w/runs/cmp', '/w/runs/cmp/../other', posix));
    // a folder named like "..x" inside is still inside
    assert.ok(isUnder('/w', '/w/..x/a', posix));
  });

  it('on Windows: backslashes and drive letters (where a "dir/" prefix test fails)', () => {
    assert.ok(isUnder('C:\\w\\runs\\cmp', 'C:\\w\\runs\\cmp\\lora', win32));
    assert.ok(isUnder('C:\\w\\runs\\cmp', 'c:\\w\\runs\\cmp\\lora', win32), 'drive letters in either case');
    assert.ok(!isUnder('C:\\w\\runs\\cmp', 'C:\\w\\runs\\cmp-2\\lora', win32));
    assert.ok(!isUnder('C:\\w\\runs\\cmp', 'D:\\w\\runs\\cmp\\lora', win32));
  });

  it('within any of several roots; an empty root (an unnamed source) matches nothing', () => {
    assert.ok(isWithinAny(['/a', '/r/eval'], '/r/eval/status.json', posix));
    assert.ok(!isWithinAny(['/a', ''], '/r/x', posix));
    assert.ok(!isWithinAny([], '/r/x', posix));
  });
});
