/**
 * The byte-level tokenizer of the bundled model (media/models/tiny-gpt): token ids 0–255 are the
 * UTF-8 bytes of the text, 256 is `<|endoftext|>` (end of sequence, also used as padding). There
 * is no merge table, so any string encodes and every id sequence decodes.
 */

export class ByteTokenizer {
  /** 256 byte values plus `<|endoftext|>`. */
  readonly vocabSize = 257;
  readonly eosId = 256;
  readonly padId = 256;
  readonly eosToken = '<|endoftext|>';

  /**
   * The UTF-8 bytes of `text` as ids (no special tokens added), except that `<|endoftext|>` written
   * in the text is the special id, as Hugging Face tokenizers match added tokens (a chat template
   * writes its end-of-sequence token as text). Lone surrogates become U+FFFD.
   */
  encode(text: string): number[] {
    const parts = text.split(this.eosToken);
    const ids: number[] = [];
    parts.forEach((part, i) => {
      if (i > 0) ids.push(this.eosId);
      for (const b of Buffer.from(part, 'utf8')) ids.push(b);
    });
    return ids;
  }

  /**
   * Text from ids: special ids (≥ 256) and anything that is not a byte value are dropped, and
   * the bytes are decoded leniently (invalid or truncated UTF-8 sequences become U+FFFD).
   */
  decode(ids: readonly number[]): string {
    const bytes = new Uint8Array(ids.length);
    let n = 0;
    for (const id of ids) if (Number.isInteger(id) && id >= 0 && id < 256) bytes[n++] = id;
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(bytes.subarray(0, n));
  }
}

export const byteTokenizer = new ByteTokenizer();
