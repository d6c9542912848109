/**
 * SentencePiece's model file (`spm.model`, `tokenizer.model`: a `ModelProto` in protobuf's wire
 * format), read without a protobuf library: the pieces with their scores and types, and the trainer
 * settings a tokenizer needs. Field numbers are those of sentencepiece_model.proto; unknown fields
 * are skipped, as protobuf readers do. A malformed file is an InputError naming the byte offset.
 */
import { InputError } from '../errors';
import { readInputFile } from '../io/read-input';

/** sentencepiece_model.proto's SentencePiece.Type. */
export const PIECE_TYPES = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export interface SentencePiece {
  piece: string;
  score: number;
  type: number;
}

export interface SentencePieceModel {
  pieces: SentencePiece[];
  /** TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char. */
  modelType: number;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  byteFallback: boolean;
  /** NormalizerSpec.name (nmt_nfkc, identity, ...). */
  normalizer: string;
}

const WIRE = { varint: 0, fixed64: 1, bytes: 2, fixed32: 5 } as const;

/** One field as read: its number, and its value (a varint as a Number, exact to 2⁵³; bytes as a view). */
type Field = { field: number; at: number } & ({ wire: 0; value: number; low32: number } | { wire: 1; value: DataView } | { wire: 2; value: Uint8Array } | { wire: 5; value: DataView });

/** The fields of one message (`bytes`), in order; `base` is its offset in the file (for errors). */
function* fields(bytes: Uint8Array, file: string, base: number): Generator<Field> {
  let pos = 0;
  const fail = (problem: string): never => {
    throw new InputError(file, `byte ${base + pos}`, `not a SentencePiece model: ${problem}`);
  };
  const varint = (): { value: number; low32: number } => {
    let value = 0;
    let low32 = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) fail('a number runs past the end of the data');
      const b = bytes[pos++]!;
      if (i < 5) low32 |= (b & 0x7f) << (7 * i);
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) return { value, low32 };
    }
    return fail('a number longer than 10 bytes');
  };
  while (pos < bytes.length) {
    const at = base + pos;
    const key = varint().value;
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) fail('field number 0');
    const take = (n: number) => {
      if (n > bytes.length - pos) fail(`a field of ${n} bytes runs past the end of the data`);
      const start = pos;
      pos += n;
      return start;
    };
    if (wire === WIRE.varint) {
      const v = varint();
      yield { field, at, wire: 0, value: v.value, low32: v.low32 };
    } else if (wire === WIRE.bytes) {
      const n = varint().value;
      const start = take(n);
      yield { field, at, wire: 2, value: bytes.subarray(start, start + n) };
    } else if (wire === WIRE.fixed32 || wire === WIRE.fixed64) {
      const n = wire === WIRE.fixed32 ? 4 : 8;
      const start = take(n);
      const view = new DataView(bytes.buffer, bytes.byteOffset + start, n);
      yield wire === WIRE.fixed32 ? { field, at, wire: 5, value: view } : { field, at, wire: 1, value: view };
    } else {
      fail(`wire type ${wire} (field ${field}) is not one protobuf 3 writes`);
    }
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function text(f: Field, file: string): string {
  if (f.wire !== 2) throw new InputError(file, `byte ${f.at}`, `not a SentencePiece model: field ${f.field} should be text`);
  try {
    return utf8.decode(f.value);
  } catch {
    throw new InputError(file, `byte ${f.at}`, `not a SentencePiece model: field ${f.field} is not UTF-8 text`);
  }
}

function int(f: Field, file: string): number {
  if (f.wire !== 0) throw new InputError(file, `byte ${f.at}`, `not a SentencePiece model: field ${f.field} should be a number`);
  return f.low32 | 0; // int32 (a negative one is written as ten bytes; its low 32 bits are the value)
}

function message(f: Field, file: string): Uint8Array {
  if (f.wire !== 2) throw new InputError(file, `byte ${f.at}`, `not a SentencePiece model: field ${f.field} should be a message`);
  return f.value;
}

export function readSentencePieceModel(file: string): SentencePieceModel {
  const bytes: Uint8Array = readInputFile(file);
  // TrainerSpec's defaults (sentencepiece_model.proto).
  const model: SentencePieceModel = { pieces: [], modelType: 1, unkId: 0, bosId: 1, eosId: 2, padId: -1, byteFallback: false, normalizer: '' };
  const offset = (sub: Uint8Array) => sub.byteOffset - bytes.byteOffset;
  for (const f of fields(bytes, file, 0)) {
    if (f.field === 1) {
      const m = message(f, file);
      const piece: SentencePiece = { piece: '', score: 0, type: PIECE_TYPES.normal };
      for (const p of fields(m, file, offset(m))) {
        if (p.field === 1) piece.piece = text(p, file);
        else if (p.field === 2) {
          if (p.wire !== 5) throw new InputError(file, `byte ${p.at}`, 'not a SentencePiece model: a piece score should be a float');
          piece.score = p.value.getFloat32(0, true);
        } else if (p.field === 3) piece.type = int(p, file);
      }
      model.pieces.push(piece);
    } else if (f.field === 2) {
      const m = message(f, file);
      for (const t of fields(m, file, offset(m))) {
        if (t.field === 3) model.modelType = int(t, file);
        else if (t.field === 35) model.byteFallback = int(t, file) !== 0;
        else if (t.field === 40) model.unkId = int(t, file);
        else if (t.field === 41) model.bosId = int(t, file);
        else if (t.field === 42) model.eosId = int(t, file);
        else if (t.field === 43) model.padId = int(t, file);
      }
    } else if (f.field === 3) {
      const m = message(f, file);
      for (const n of fields(m, file, offset(m))) if (n.field === 1) model.normalizer = text(n, file);
    }
  }
  if (model.pieces.length === 0) throw new InputError(file, '', 'not a SentencePiece model: it holds no pieces');
  return model;
}
