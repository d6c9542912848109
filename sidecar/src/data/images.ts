/**
 * Image-folder data sets (one sub-folder per class, PNG or JPEG files) for ViT: decoding with
 * pngjs / jpeg-js, bilinear resize to the model's image size (half-pixel centres, as PIL and
 * torchvision without antialias), and ViT's default normalisation (x/255 − 0.5) / 0.5.
 */
import * as jpeg from 'jpeg-js';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { PNG } from 'pngjs';
import { InputError } from '../errors';

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
  const classes = entries.filter((d) => !d.startsWith('.') && statSync(join(root, d)).isDirectory());
  if (classes.length === 0) throw new InputError(root, '', 'an image data set needs one sub-folder of images per class; found none');
  const items: ImageItem[] = [];
  for (const c of classes) {
    for (const f of readdirSync(join(root, c)).sort()) {
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

export function decodeImage(file: string): RgbaImage {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new InputError(file, '', `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const isPng = buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47;
  const isJpeg = buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
  try {
    if (isPng) {
      const png = PNG.sync.read(buf);
      return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length) };
    }
    if (isJpeg) {
      const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
      return { width: img.width, height: img.height, data: img.data };
    }
  } catch (e) {
    throw new InputError(file, '', `cannot decode the ${isPng ? 'PNG' : 'JPEG'} image (${(e as Error).message})`);
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
