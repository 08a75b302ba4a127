/**
 * x86 bzImage (`vmlinuz`): the real-mode setup header (Documentation/arch/x86/boot.rst) and the
 * compressed payload — the ELF `vmlinux` (objcopy'd: section headers kept, symbols stripped) with
 * the KASLR relocation table (`vmlinux.relocs`) appended, compressed with the method the kernel
 * was configured with, followed by the uncompressed size (le32, scripts' `size_append`).
 */
import { gunzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import { lz4LegacyDecompress, LZ4_LEGACY_MAGIC } from './lz4.js';

export type Compression = 'gzip' | 'xz' | 'lzma' | 'zstd' | 'lz4' | 'bzip2' | 'lzo' | 'none';

export interface BzImageHeader {
  /** Boot protocol version, e.g. 0x20f. */
  protocol: number;
  setupSects: number;
  /** File offset of the protected-mode code ((setup_sects + 1) * 512). */
  pmOffset: number;
  /** File offset and length of the compressed payload. */
  payloadOffset: number;
  payloadLength: number;
  /** pref_address: LOAD_PHYSICAL_ADDR, the physical address vmlinux was linked for. */
  prefAddress: bigint;
  initSize: number;
  relocatable: boolean;
  kernelAlignment: number;
  /** The kernel_version string of the setup code ("6.12.117+deb12-amd64 (debian-kernel@…) #1 SMP …"). */
  version: string;
  compression: Compression;
  /** Uncompressed size recorded after the payload (le32). */
  uncompressedSize: number;
}

export function parseBzImage(file: Uint8Array): BzImageHeader {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (b.length < 0x270 || b.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new Error('not a bzImage (no HdrS)');
  const protocol = b.readUInt16LE(0x206);
  if (protocol < 0x208) throw new Error(`boot protocol ${protocol.toString(16)} < 2.08: no payload_offset`);
  const setupSects = b[0x1f1] || 4;
  const pmOffset = (setupSects + 1) * 512;
  const payloadOffset = pmOffset + b.readUInt32LE(0x248);
  const payloadLength = b.readUInt32LE(0x24c);
  if (payloadLength < 8 || payloadOffset + payloadLength > b.length)
    throw new Error('bzImage payload outside the file');
  const verOff = b.readUInt16LE(0x20e);
  let version = '';
  if (verOff && verOff + 0x200 < b.length) {
    const s = verOff + 0x200;
    const nul = b.indexOf(0, s);
    version = b.toString('latin1', s, nul < 0 ? Math.min(b.length, s + 256) : nul);
  }
  const payload = b.subarray(payloadOffset, payloadOffset + payloadLength);
  return {
    protocol,
    setupSects,
    pmOffset,
    payloadOffset,
    payloadLength,
    prefAddress: protocol >= 0x20a ? b.readBigUInt64LE(0x258) : 0x1000000n,
    initSize: protocol >= 0x20a ? b.readUInt32LE(0x260) : 0,
    relocatable: b[0x234] !== 0,
    kernelAlignment: b.readUInt32LE(0x230),
    version,
    compression: detectCompression(payload),
    uncompressedSize: payload.readUInt32LE(payload.length - 4),
  };
}

/** The payload's method, from its magic (what the decompressor in arch/x86/boot/compressed was built for). */
export function detectCompression(p: Uint8Array): Compression {
  const m = (...bytes: number[]) => bytes.every((x, i) => p[i] === x);
  if (m(0x1f, 0x8b)) return 'gzip';
  if (m(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (m(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (p.length >= 4 && new DataView(p.buffer, p.byteOffset, 4).getUint32(0, true) === LZ4_LEGACY_MAGIC) return 'lz4';
  if (m(0x42, 0x5a, 0x68)) return 'bzip2';
  if (m(0x89, 0x4c, 0x5a, 0x4f)) return 'lzo';
  if (m(0x5d, 0x00, 0x00)) return 'lzma';
  if (m(0x7f, 0x45, 0x4c, 0x46)) return 'none';
  return 'none';
}

interface LzmaNative {
  decompress(input: Buffer, opts?: unknown): Promise<Buffer>;
}

const requireCjs = createRequire(import.meta.url);

/**
 * Decompress a bzImage payload (without its trailing size word). gzip: node:zlib; xz/lzma:
 * `lzma-native` (liblzma: the kernel's xz streams use the x86 BCJ filter, which the pure-JS/WASM xz
 * readers on npm reject); zstd: `zstddec` (the reference decoder as WebAssembly); lz4: ./lz4.ts.
 */
export async function decompressPayload(
  payload: Uint8Array,
  method: Compression,
  outSize: number,
): Promise<Uint8Array> {
  const body = payload.subarray(0, payload.length - 4);
  let out: Uint8Array;
  switch (method) {
    case 'gzip':
      out = gunzipSync(body);
      break;
    case 'xz':
    case 'lzma': {
      const lzma = requireCjs('lzma-native') as LzmaNative;
      out = await lzma.decompress(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
      break;
    }
    case 'zstd': {
      const { ZSTDDecoder } = await import('zstddec');
      const dec = new ZSTDDecoder();
      await dec.init();
      // zstddec returns a copy out of its WebAssembly heap; the decoder (and its heap) is dropped here.
      out = dec.decode(body, outSize);
      break;
    }
    case 'lz4':
      out = lz4LegacyDecompress(body, outSize);
      break;
    case 'none':
      out = body;
      break;
    default:
      throw new Error(`bzImage payload compressed with ${method}: not supported`);
  }
  if (out.length !== outSize) throw new Error(`decompressed ${out.length} bytes, the bzImage says ${outSize}`);
  return out;
}
