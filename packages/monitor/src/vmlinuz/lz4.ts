/**
 * LZ4 "legacy" frames, the format of an x86 bzImage built with CONFIG_KERNEL_LZ4 (`lz4 -l`, what
 * lib/decompress_unlz4.c reads): magic 0x184C2102, then blocks of `u32 compressed size` + one LZ4
 * block each (8 MiB of output at most), until the input ends; the magic may repeat between blocks
 * (concatenated archives). The block format is the stable LZ4 one (sequences of literals + match).
 *
 * Written here (some 60 lines) rather than taken from npm: no maintained pure-JS package reads the
 * legacy framing (lz4js reads LZ4 frames only and was last released years ago).
 */
export const LZ4_LEGACY_MAGIC = 0x184c2102;

/** Decode one LZ4 block src[s, end) into dst at d; returns the new output position. */
export function lz4DecodeBlock(src: Uint8Array, s: number, end: number, dst: Uint8Array, d: number): number {
  while (s < end) {
    const token = src[s++];
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (s >= end) throw new Error('lz4: truncated literal length');
        b = src[s++];
        lit += b;
      } while (b === 255);
    }
    if (s + lit > end || d + lit > dst.length) throw new Error('lz4: literal run past the end');
    if (lit < 32) {
      for (let k = 0; k < lit; k++) dst[d + k] = src[s + k];
    } else dst.set(src.subarray(s, s + lit), d);
    s += lit;
    d += lit;
    if (s >= end) break; // the last sequence has literals only
    if (s + 2 > end) throw new Error('lz4: truncated match offset');
    const off = src[s] | (src[s + 1] << 8);
    s += 2;
    if (off === 0 || off > d) throw new Error(`lz4: bad match offset ${off} at output ${d}`);
    let len = token & 15;
    if (len === 15) {
      let b: number;
      do {
        if (s >= end) throw new Error('lz4: truncated match length');
        b = src[s++];
        len += b;
      } while (b === 255);
    }
    len += 4;
    if (d + len > dst.length) throw new Error('lz4: match past the end of the output');
    let from = d - off;
    if (off >= len && len >= 32) {
      dst.copyWithin(d, from, from + len);
      d += len;
    } else {
      for (let k = 0; k < len; k++) dst[d++] = dst[from++];
    }
  }
  return d;
}

/** Decode a legacy-framed LZ4 stream whose output size is known (a bzImage payload's last 4 bytes). */
export function lz4LegacyDecompress(src: Uint8Array, outSize: number): Uint8Array {
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (src.length < 4 || dv.getUint32(0, true) !== LZ4_LEGACY_MAGIC) throw new Error('lz4: no legacy frame magic');
  const out = new Uint8Array(outSize);
  let s = 4;
  let d = 0;
  while (s + 4 <= src.length && d < outSize) {
    const n = dv.getUint32(s, true);
    s += 4;
    if (n === LZ4_LEGACY_MAGIC) continue;
    if (n === 0 || s + n > src.length) throw new Error(`lz4: bad block size ${n} at ${s - 4}`);
    d = lz4DecodeBlock(src, s, s + n, out, d);
    s += n;
  }
  if (d !== outSize) throw new Error(`lz4: decoded ${d} bytes, expected ${outSize}`);
  return out;
}
