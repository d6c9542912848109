/**
 * Image-folder data sets (one sub-folder per class, PNG or JPEG files) for ViT: decoding with
 * pngjs / jpeg-js, bilinear resize to the model's image size (half-pixel centres, as PIL and
 * torchvision without antialias), and ViT's default normalisation (x/255 − 0.5) / 0.5.
 */
import * as jpeg from 'jpeg-js';
import { readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { PNG } from 'pngjs';
import { InputError } from '../errors';
import { readInputFile } from '../io/read-input';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];
export const VIT_MEAN = 0.5;
export const VIT_STD = 0.5;

export interface ImageItem {
  file: string;
  /** The class folder's name. */
  className: string;
}

/** Class folders in sorted order, and their image files (sorted), like torchvision's ImageFolder. */
export function listImageFolder(root: string): { classes: string[]; items: ImageItem[] } {
  let entries: string[];
  try {
    entries = readdirSync(root).sort();
  } catch (e) {
    throw new InputError(root, '', `cannot list the image folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  // stat follows links: a dangling one (or an unreadable entry) is refused by name, not thrown raw.
  const isDir = (p: string): boolean => {
    try {
      return statSync(p).isDirectory();
    } catch (e) {
      throw new InputError(p, '', `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${(e as NodeJS.ErrnoException).code === 'ENOENT' ? ': a broken symbolic link?' : ''})`);
    }
  };
  const classes = entries.filter((d) => !d.startsWith('.') && isDir(join(root, d)));
  if (classes.length === 0) throw new InputError(root, '', 'an image data set needs one sub-folder of images per class; found none');
  const items: ImageItem[] = [];
  for (const c of classes) {
    let files: string[];
    try {
      files = readdirSync(join(root, c)).sort();
    } catch (e) {
      throw new InputError(join(root, c), '', `cannot list the class folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    for (const f of files) {
      if (f.startsWith('.')) continue;
      if (IMAGE_EXTENSIONS.includes(extname(f).toLowerCase())) items.push({ file: join(root, c, f), className: c });
    }
  }
  if (items.length === 0) throw new InputError(root, '', `no PNG or JPEG files in the class folders (${classes.join(', ')})`);
  return { classes, items };
}

export interface RgbaImage {
  width: number;
  height: number;
  /** RGBA, 8 bits per channel, row-major. */
  data: Uint8Array;
}

/** The largest image decoded (16 megapixels, 64 MB as RGBA); a ViT resizes to its own small size anyway. */
export const MAX_IMAGE_PIXELS = 16_000_000;

const tooBig = (w: number | undefined, h: number | undefined) =>
  `the image is ${w ?? '?'}×${h ?? '?'} pixels, over the ${MAX_IMAGE_PIXELS / 1e6} megapixels PEFT Lab decodes (a corrupt header, or downscale it)`;

/** A JPEG's frame size from its SOF marker, if found. */
function jpegSize(buf: Buffer): { w: number; h: number } | undefined {
  for (let i = 2; i + 9 < buf.length && buf[i] === 0xff; ) {
    const marker = buf[i + 1]!;
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return { h: buf.readUInt16BE(i + 5), w: buf.readUInt16BE(i + 7) };
    i += 2 + buf.readUInt16BE(i + 2);
  }
  return undefined;
}

export function decodeImage(file: string): RgbaImage {
  const buf = readInputFile(file);
  const isPng = buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47;
  const isJpeg = buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
  // Decoding allocates by the header's size, and a corrupt header can claim anything: refuse big
  // images before decoding (PNG from IHDR; JPEG through jpeg-js's own limit, reworded below).
  if (isPng && buf.length >= 24) {
    const w = buf.readUInt32BE(16);
    const h = buf.readUInt32BE(20);
    if (w === 0 || h === 0) throw new InputError(file, '', `the PNG header says ${w}×${h} pixels: the file is corrupt`);
    if (w * h > MAX_IMAGE_PIXELS) throw new InputError(file, '', tooBig(w, h));
  }
  try {
    if (isPng) {
      const png = PNG.sync.read(buf);
      return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length) };
    }
    if (isJpeg) {
      const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6, maxMemoryUsageInMB: 512 });
      if (!(img.width > 0 && img.height > 0)) throw new Error(`a ${img.width}×${img.height} frame`);
      return { width: img.width, height: img.height, data: img.data };
    }
  } catch (e) {
    const msg = (e as Error).message;
    if (isJpeg && /maxResolutionInMP/.test(msg)) throw new InputError(file, '', tooBig(jpegSize(buf)?.w, jpegSize(buf)?.h));
    throw new InputError(file, '', `cannot decode the ${isPng ? 'PNG' : 'JPEG'} image (${msg})`);
  }
  throw new InputError(file, '', 'not a PNG or JPEG image (unrecognised file signature)');
}

/**
 * Bilinear resize with half-pixel centres and edge clamping, then normalisation, to CHW float32.
 * `channels` 3 takes RGB; 1 takes the mean of RGB.
 */
export function toPixelValues(img: RgbaImage, size: number, channels: number, mean = VIT_MEAN, std = VIT_STD): Float32Array {
  const out = new Float32Array(channels * size * size);
  const { width: w, height: h, data } = img;
  const sx = w / size;
  const sy = h / size;
  for (let y = 0; y < size; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), h - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const wy = fy - y0;
    for (let x = 0; x < size; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), w - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const wx = fx - x0;
      const px = (yy: number, xx: number, c: number) => data[(yy * w + xx) * 4 + c]!;
      const sample = (c: number) =>
        (1 - wy) * ((1 - wx) * px(y0, x0, c) + wx * px(y0, x1, c)) + wy * ((1 - wx) * px(y1, x0, c) + wx * px(y1, x1, c));
      if (channels === 1) {
        const v = (sample(0) + sample(1) + sample(2)) / 3;
        out[y * size + x] = (v / 255 - mean) / std;
      } else {
        for (let c = 0; c < channels; c++) out[c * size * size + y * size + x] = (sample(Math.min(c, 2)) / 255 - mean) / std;
      }
    }
  }
  return out;
}
