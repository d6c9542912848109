/** Placeholder until the adapter zoo lands: the bench's LoRA case needs it. */
import type { LoraFactory } from '../bench/bench';
export function loraFactory(): LoraFactory | undefined {
  return undefined;
}
