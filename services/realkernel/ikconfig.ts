// The kernel's own .config, when it was built with CONFIG_IKCONFIG=y: kernel/configs.c places the
// gzip'd config between the markers "IKCFG_ST" and "IKCFG_ED" in .rodata (scripts/extract-ikconfig
// looks for the same bytes). With CONFIG_IKCONFIG=m the blob lives in configs.ko, not the image.
import { gunzipSync } from 'node:zlib';

const START = Buffer.from('IKCFG_ST\x1f\x8b\x08', 'latin1'); // marker, then the gzip magic and deflate method
const END = Buffer.from('IKCFG_ED', 'latin1');
/** A real .config is ~250 KB; more than this from a small blob is not a config. */
const MAX_CONFIG = 16 << 20;

export interface EmbeddedConfig {
  text: string;
  /** File offset of the gzip data. */
  offset: number;
}

/** The embedded config, or undefined when the image has none. Throws when the blob is corrupt. */
export function embeddedConfig(image: Uint8Array): EmbeddedConfig | undefined {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  const at = b.indexOf(START);
  if (at < 0) return undefined;
  const offset = at + 8;
  const end = b.indexOf(END, offset);
  if (end < 0) throw new Error(`the embedded kernel config at offset ${offset} has no IKCFG_ED end marker`);
  let text: string;
  try {
    text = gunzipSync(b.subarray(offset, end), { maxOutputLength: MAX_CONFIG }).toString('latin1');
  } catch (e) {
    throw new Error(`the embedded kernel config at offset ${offset} does not decompress: ${(e as Error).message}`);
  }
  return { text, offset };
}
