/**
 * Reading an input file (data, tokenizer model, image) whole: a failure is an InputError naming the
 * file and the system's reason (ENOENT, EISDIR, EACCES…), so the user sees which file and why.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { InputError } from '../errors';

const cannotRead = (file: string, e: unknown) => new InputError(file, '', `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);

export function readInputFile(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw cannotRead(file, e);
  }
}

export function readInputText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw cannotRead(file, e);
  }
}

export async function readInputFileAsync(file: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    throw cannotRead(file, e);
  }
}
