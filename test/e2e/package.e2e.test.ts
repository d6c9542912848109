/**
 * Per-platform packages (`npm run package -- --target …`): each .vsix carries its platform's Dawn
 * (WebGPU) and no other platform's binaries, and says its target in the manifest; a target without a
 * Dawn build gets the WebAssembly path only.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { inflateRawSync } from 'node:zlib';
import { REPO } from './harness';

/** A zip's entries from its central directory: name → its data, inflated on demand. */
function zipEntries(buf: Buffer): Map<string, () => Buffer> {
  const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(eocd >= 0, 'a zip file');
  const entries = new Map<string, () => Buffer>();
  let p = buf.readUInt32LE(eocd + 16);
  for (let n = buf.readUInt16LE(eocd + 10); n > 0; n--) {
    assert.equal(buf.readUInt32LE(p), 0x02014b50, 'central directory entry');
    const method = buf.readUInt16LE(p + 10);
    const size = buf.readUInt32LE(p + 20);
    const nameLength = buf.readUInt16LE(p + 28);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLength);
    entries.set(name, () => {
      const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
      const data = buf.subarray(start, start + size);
      return method === 8 ? inflateRawSync(data) : Buffer.from(data);
    });
    p += 46 + nameLength + buf.readUInt16LE(p + 30) + buf.readUInt16LE(p + 32);
  }
  return entries;
}

describe('per-platform packages', { timeout: 10 * 60_000 }, () => {
  const targets = ['darwin-arm64', 'alpine-x64'];
  const vsix = (t: string) => join(REPO, `peft-lab-${t}.vsix`);
  after(() => targets.forEach((t) => rmSync(vsix(t), { force: true })));

  it("packs each target with its platform's Dawn and nothing of the others", () => {
    const r = spawnSync('npm', ['run', '--silent', 'package', '--', '--target', targets.join(',')], { cwd: REPO, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    for (const t of targets) {
      const entries = zipEntries(readFileSync(vsix(t)));
      const names = [...entries.keys()];
      const manifest = entries.get('extension.vsixmanifest')!().toString('utf8');
      assert.match(manifest, new RegExp(`TargetPlatform="${t}"`), `${t}: the manifest names its target`);
      for (const f of ['extension/dist/extension.js', 'extension/dist/sidecar.js', 'extension/dist/cli.js', 'extension/media/models/tiny-gpt/config.json']) assert.ok(entries.has(f), `${t}: ${f}`);
      assert.ok(names.some((n) => /^extension\/dist\/tfjs-backend-wasm.*\.wasm$/.test(n)), `${t}: the WebAssembly backend`);
      assert.equal(names.filter((n) => n.startsWith('extension/dist/native/')).length, 0, `${t}: no native kernels built for it here`);
      const dawn = names.filter((n) => n.startsWith('extension/dist/dawn/'));
      if (t === 'darwin-arm64') assert.ok(dawn.includes('extension/dist/dawn/darwin-universal/dawn.node') && dawn.every((n) => n.startsWith('extension/dist/dawn/darwin-universal/')), `${t}: ${dawn.join(', ')}`);
      else assert.deepEqual(dawn, [], `${t}: no Dawn build for musl`);
      assert.ok(!names.some((n) => n.endsWith('.map') || n.startsWith('extension/node_modules/')), `${t}: no source maps or node_modules`);
    }
    const bad = spawnSync('npm', ['run', '--silent', 'package', '--', '--target', 'web'], { cwd: REPO, encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--target web: not a target this package is built for/);
  });
});
