import { readFile } from 'node:fs/promises';
import { PmiError } from '@pmi/core';
import { Btf } from './btf.js';
import type { ParseBtfOptions } from './parse.js';

/**
 * The `.BTF` section of an ELF64 little-endian file (a vmlinux or a .ko), or undefined when the
 * file is not ELF. Throws E_BTF for an ELF without (or with a broken) `.BTF` section.
 */
export function elfBtfSection(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length < 4 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46)
    return undefined;
  const fail = (msg: string): never => {
    throw new PmiError('E_BTF', 'btf', `ELF: ${msg}`, {});
  };
  if (bytes.length < 64) fail('truncated ELF header');
  if (bytes[4] !== 2 || bytes[5] !== 1) fail('only ELF64 little-endian files are supported');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (o: number): number => dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 2 ** 32;
  const shoff = u64(0x28);
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shentsize < 64 || shoff + shnum * shentsize > bytes.length || shstrndx >= shnum) fail('bad section header table');
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    return { name: dv.getUint32(o, true), type: dv.getUint32(o + 4, true), offset: u64(o + 0x18), size: u64(o + 0x20) };
  };
  const strtab = sh(shstrndx);
  if (strtab.offset + strtab.size > bytes.length) fail('section name table beyond the file');
  const want = [0x2e, 0x42, 0x54, 0x46, 0]; // ".BTF\0"
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    const n = strtab.offset + s.name;
    let match = n + want.length <= strtab.offset + strtab.size;
    for (let j = 0; match && j < want.length; j++) match = bytes[n + j] === want[j];
    if (!match) continue;
    if (s.type === 8 /* SHT_NOBITS */ || s.offset + s.size > bytes.length) fail('.BTF section has no data in the file');
    return bytes.subarray(s.offset, s.offset + s.size);
  }
  return fail('no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF?)');
}

/** Parse BTF from a byte buffer holding raw BTF or an ELF file with a `.BTF` section. */
export function parseBtfFile(bytes: Uint8Array, opts: ParseBtfOptions & { base?: Btf } = {}): Btf {
  return new Btf(elfBtfSection(bytes) ?? bytes, opts);
}

/**
 * Load BTF from a file: a raw blob (a copy of /sys/kernel/btf/vmlinux, or of a module's
 * /sys/kernel/btf/MODULE with `base`) or an ELF vmlinux/.ko with a `.BTF` section.
 */
export async function loadBtfFile(path: string, opts: ParseBtfOptions & { base?: Btf } = {}): Promise<Btf> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new PmiError('E_SOURCE_IO', 'btf', `cannot read ${path}: ${(e as Error).message}`, { path }, e);
  }
  try {
    return parseBtfFile(bytes, opts);
  } catch (e) {
    if (e instanceof PmiError) throw new PmiError(e.code, e.origin, `${path}: ${e.message}`, { path, ...e.data }, e);
    throw e;
  }
}
