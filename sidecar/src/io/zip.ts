/**
 * The member index of a zip archive whose members are stored uncompressed, as torch.save writes
 * them (pytorch_model.bin): each member's name, data offset and size, read from the central
 * directory (zip64 included), so that tensors are read where they lie without unpacking anything.
 */
import type { FileHandle } from 'node:fs/promises';

export interface ZipMember {
  name: string;
  /** Where the member's bytes start in the file. */
  offset: number;
  size: number;
}

export class ZipError extends Error {}

async function readAt(fh: FileHandle, length: number, position: number): Promise<DataView> {
  const buf = new Uint8Array(length);
  const { bytesRead } = await fh.read(buf, 0, length, position);
  if (bytesRead !== length) throw new ZipError(`truncated zip: ${length} bytes needed at offset ${position}, ${bytesRead} read`);
  return new DataView(buf.buffer);
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const MAX_CENTRAL_BYTES = 256 * 1024 * 1024;

const big = (v: DataView, at: number) => {
  const n = v.getBigUint64(at, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError('a zip64 size or offset beyond 2^53');
  return Number(n);
};

/** Every member of the archive, by name. Compressed members are refused (torch stores them plainly). */
export async function zipMembers(fh: FileHandle, fileSize: number): Promise<Map<string, ZipMember>> {
  // The end-of-central-directory record: 22 bytes plus a comment of up to 64 KiB, at the end.
  const tail = Math.min(fileSize, 22 + 0xffff);
  const end = await readAt(fh, tail, fileSize - tail);
  let at = -1;
  for (let i = tail - 22; i >= 0; i--) if (end.getUint32(i, true) === EOCD) {
    at = i;
    break;
  }
  if (at < 0) throw new ZipError('not a zip archive (no end-of-central-directory record)');
  let count = end.getUint16(at + 10, true);
  let cdSize = end.getUint32(at + 12, true);
  let cdOffset = end.getUint32(at + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64 (more than 65535 members or 4 GiB): the locator sits just before the record.
    if (at < 20 || end.getUint32(at - 20, true) !== ZIP64_LOCATOR) throw new ZipError('zip64 archive without its end-of-central-directory locator');
    const rec = await readAt(fh, 56, big(end, at - 20 + 8));
    if (rec.getUint32(0, true) !== ZIP64_EOCD) throw new ZipError('zip64 end-of-central-directory record not where its locator says');
    count = big(rec, 32);
    cdSize = big(rec, 40);
    cdOffset = big(rec, 48);
  }
  if (cdSize > MAX_CENTRAL_BYTES || cdOffset + cdSize > fileSize) throw new ZipError(`central directory (${cdSize} bytes at ${cdOffset}) does not fit the file (${fileSize} bytes)`);
  const cd = await readAt(fh, cdSize, cdOffset);
  const decoder = new TextDecoder('utf-8');
  const members = new Map<string, ZipMember>();
  let p = 0;
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdSize || cd.getUint32(p, true) !== CENTRAL) throw new ZipError(`central directory entry ${k} is malformed`);
    const method = cd.getUint16(p + 10, true);
    let size = cd.getUint32(p + 24, true);
    let compressed = cd.getUint32(p + 20, true);
    const nameLen = cd.getUint16(p + 28, true);
    const extraLen = cd.getUint16(p + 30, true);
    const commentLen = cd.getUint16(p + 32, true);
    let local = cd.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) throw new ZipError(`central directory entry ${k} runs past the directory`);
    const name = decoder.decode(new Uint8Array(cd.buffer, p + 46, nameLen));
    // zip64 extended information: the fields that overflowed, in this order.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = cd.getUint16(e, true);
      const len = cd.getUint16(e + 2, true);
      if (e + 4 + len > p + 46 + nameLen + extraLen) throw new ZipError(`member ${name}: an extra field runs past its entry`);
      if (id === 0x0001) {
        let f = e + 4;
        const next = () => {
          if (f + 8 > e + 4 + len) throw new ZipError(`member ${name}: its zip64 field is too short`);
          f += 8;
          return big(cd, f - 8);
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (local === 0xffffffff) local = next();
      }
      e += 4 + len;
    }
    if (method !== 0) throw new ZipError(`member ${name} is compressed (method ${method}); torch.save stores members uncompressed`);
    if (compressed !== size) throw new ZipError(`member ${name}: stored size ${compressed} differs from its size ${size}`);
    const head = await readAt(fh, 30, local);
    if (head.getUint32(0, true) !== LOCAL) throw new ZipError(`member ${name}: no local header where the directory says`);
    const offset = local + 30 + head.getUint16(26, true) + head.getUint16(28, true);
    if (offset + size > fileSize) throw new ZipError(`member ${name} runs past the end of the file`);
    members.set(name, { name, offset, size });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return members;
}
