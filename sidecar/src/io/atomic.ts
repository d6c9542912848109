/** Atomic file writes: a temp file beside the target, fsync, rename over it; the temp is removed on failure. */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError } from '../errors';

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
    // The rename's EISDIR would name neither the path asked for nor the cause.
    if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw new InputError(path, '', IS_A_FOLDER);
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

const IS_A_FOLDER = 'is a folder: give the path of a file to write';

/**
 * Makes `path` ready to be written as a file, with errors that name it: a folder there is refused,
 * and so is a missing parent folder, unless `createFolder` (the command line makes it, as the
 * commands that write folders do).
 */
export async function prepareOutputFile(path: string, opts: { createFolder?: boolean } = {}): Promise<void> {
  const parent = dirname(path);
  if (opts.createFolder) {
    try {
      await fsp.mkdir(parent, { recursive: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new InputError(path, '', code === 'EEXIST' || code === 'ENOTDIR' ? `cannot create its folder ${parent}: a file is in the way` : `cannot create its folder ${parent} (${code ?? (e as Error).message})`);
    }
  }
  const st = await fsp.stat(path).catch(() => undefined);
  if (st?.isDirectory()) throw new InputError(path, '', IS_A_FOLDER);
  if (!st && !(await fsp.stat(parent).catch(() => undefined))?.isDirectory()) throw new InputError(path, '', `its folder ${parent} does not exist`);
}
