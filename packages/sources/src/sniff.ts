import fs from 'node:fs';
import path from 'node:path';
import { PmiError, splitQuery, type OpenOptions, type PhysicalMemory } from '@pmi/core';
import { preadSome } from './file-memory.js';
import { LIME_MAGIC } from './lime.js';

export type SniffedKind = 'elf' | 'lime' | 'qemu' | 'raw';

/** Directories whose files are (almost always) QEMU memory-backend-file RAM. */
const QEMU_RAM_DIRS = ['/dev/shm/', '/dev/hugepages/', '/dev/hugepages1G/', '/run/shm/'];

/**
 * Decide the format of a bare path, first match wins:
 *
 * 1. starts with `\x7fELF` → `elf`
 * 2. starts with the LiME magic (u32 LE 0x4C694D45, bytes "EMiL") → `lime`
 * 3. lives under /dev/shm, /run/shm or /dev/hugepages*, is named `*.ram`, or is named
 *    `qemu_back_mem.*` (QEMU's name when mem-path is a directory) → `qemu`
 * 4. anything else → `raw`
 *
 * Contents are checked before the path, so an ELF core saved under /dev/shm is still `elf`.
 */
export function sniffKind(p: string): SniffedKind {
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new PmiError('E_SOURCE_IO', 'source', `cannot open ${p}: ${err.message}`, { path: p, errno: err.code });
  }
  let head: Uint8Array;
  try {
    head = preadSome(fd, 8, 0);
  } catch (e) {
    throw new PmiError('E_SOURCE_IO', 'source', `cannot read ${p}: ${(e as Error).message}`, { path: p });
  } finally {
    fs.closeSync(fd);
  }
  if (head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) return 'elf';
  if (head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === LIME_MAGIC)
    return 'lime';
  if (looksLikeQemuRam(p)) return 'qemu';
  return 'raw';
}

export function looksLikeQemuRam(p: string): boolean {
  let abs = path.resolve(p);
  try {
    abs = fs.realpathSync(abs);
  } catch {
    /* keep the resolved path */
  }
  const base = path.basename(abs);
  return QEMU_RAM_DIRS.some((d) => abs.startsWith(d)) || base.endsWith('.ram') || base.startsWith('qemu_back_mem.');
}

/**
 * Bare-path opener registered with core: sniffs the kind and hands over to that opener.
 * `PATH?k=v` parameters are passed through when PATH itself is not an existing file.
 */
export function makePathSniffer(
  openers: Record<SniffedKind, (uri: string, rest: string, opts: OpenOptions) => Promise<PhysicalMemory>>,
): (p: string, opts: OpenOptions) => Promise<PhysicalMemory> {
  return async (p, opts) => {
    const filePath = fs.existsSync(p) ? p : splitQuery(p).path;
    const kind = sniffKind(filePath);
    return openers[kind](`${kind}:${p}`, p, opts);
  };
}
