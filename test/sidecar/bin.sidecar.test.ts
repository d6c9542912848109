/** The installed `peft-lab` command (bin/peft-lab.js, what npx runs): it runs the bundled CLI and passes on its exit code. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';

const BIN = resolve('bin/peft-lab.js');
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('bin/peft-lab.js', () => {
  it('runs a command, prints its output, exits 0', () => {
    const r = run('inspect', resolve('media/models/tiny-gpt'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^GPT2LMHeadModel \(gpt2\), 859,008 parameters/);
  });

  it('passes on the usage error of an unknown command (exit 2)', () => {
    const r = run('nope');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /peft-lab: unknown command 'nope'/);
    assert.match(r.stderr, /peft-lab generate \(--run RUN_DIR/);
  });
});
