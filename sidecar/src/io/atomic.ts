/** Atomic file writes: a temp file beside the target, fsync, rename over it; the temp is removed on failure. */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Writes `chunks` to `path` so that `path` is either the old file or the complete new one, never half-written. */
export async function writeAtomic(path: string, chunks: readonly Uint8Array[]): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
    for (const c of chunks) {
      let done = 0;
      while (done < c.length) done += (await fh.write(c, done, Math.min(c.length - done, 1 << 30))).bytesWritten;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  // Persist the rename itself; directories cannot be opened for fsync on every platform.
  try {
    const dh = await fsp.open(dirname(path), 'r');
    await dh.sync().finally(() => dh.close());
  } catch {
    /* best effort */
  }
}
