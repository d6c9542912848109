/** The part of pngjs (7.x, which ships no types) that PEFT Lab uses. */
declare module 'pngjs' {
  export interface PNGOptions {
    width?: number;
    height?: number;
    colorType?: number;
    inputColorType?: number;
    bitDepth?: number;
  }
  export class PNG {
    constructor(options?: PNGOptions);
    width: number;
    height: number;
    /** RGBA, 8 bits per channel, after a sync read. */
    data: Buffer;
    static sync: {
      read(buffer: Buffer, options?: { skipRescale?: boolean }): PNG;
      write(png: PNG, options?: PNGOptions): Buffer;
    };
  }
}
