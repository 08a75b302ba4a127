import { PmiError, hex, type OpenOptions } from '@pmi/core';
import {
  FileMemory,
  closeQuietly,
  normalisedUri,
  openFile,
  parseBool,
  parseFileUri,
  preadSome,
  u64,
  type Segment,
} from './file-memory.js';

export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const ET_CORE = 4;
const PN_XNUM = 0xffff;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
/** Refuse absurd note segments instead of allocating them (real ones are KiB). */
const MAX_NOTES_BYTES = 64 * 2 ** 20;

export interface ElfLoad {
  readonly paddr: number;
  readonly vaddr: bigint;
  readonly offset: number;
  readonly filesz: number;
  readonly memsz: number;
  readonly flags: number;
}

export interface ElfNote {
  /** Owner name without the trailing NUL ("CORE", "QEMU", "VMCOREINFO", …). */
  readonly name: string;
  readonly type: number;
  readonly desc: Uint8Array;
}

export interface ElfHeaderInfo {
  readonly machine: number;
  readonly phnum: number;
  readonly phoff: number;
}

/**
 * `elf:PATH[?zerofill=1]` — an ELF64 little-endian core (ET_CORE), e.g. QEMU `dump-guest-memory`
 * or kdump's /proc/vmcore. Physical address = p_paddr of each PT_LOAD; the first p_filesz bytes
 * come from the file at p_offset.
 *
 * p_memsz beyond p_filesz: the gABI defines those bytes as zero, but in memory dumps they mean
 * "not captured" (makedumpfile drops excluded pages that way), so by default they do not exist
 * (E_OUT_OF_RANGE). `zerofill=1` follows the gABI and reads them as zeros.
 *
 * Overlapping PT_LOADs (kdump's kernel-text segment repeats part of a RAM segment) are accepted;
 * where they overlap, the segment with the lower p_paddr wins (equal p_paddr: the one listed first).
 * e_machine is not checked (QEMU writes EM_386 when the vCPU is not in long mode).
 */
export class ElfCoreSource extends FileMemory {
  constructor(
    init: ConstructorParameters<typeof FileMemory>[0],
    readonly header: ElfHeaderInfo,
    readonly loads: readonly ElfLoad[],
    readonly notes: readonly ElfNote[],
    readonly zerofill: boolean,
  ) {
    super(init);
  }

  /** First note with this owner name (and type, if given). */
  findNote(name: string, type?: number): ElfNote | undefined {
    return this.notes.find((n) => n.name === name && (type === undefined || n.type === type));
  }

  /** The VMCOREINFO note's text (`KEY=value` lines), when the dump carries one. */
  vmcoreinfo(): string | undefined {
    const n = this.findNote('VMCOREINFO');
    return n ? new TextDecoder().decode(n.desc).replace(/\0+$/, '') : undefined;
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      e_machine: this.header.machine,
      pt_load: this.loads.length,
      zerofill: this.zerofill,
      notes: this.notes.map((n) => ({ name: n.name, type: n.type, size: n.desc.length })),
    };
  }
}

/** Parse the notes of one PT_NOTE segment (4-byte alignment unless p_align is 8). */
export function parseNotes(bytes: Uint8Array, align: number, where: (off: number) => string): ElfNote[] {
  const notes: ElfNote[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pad = (n: number) => Math.ceil(n / align) * align;
  let off = 0;
  while (off + 12 <= bytes.length) {
    const namesz = dv.getUint32(off, true);
    const descsz = dv.getUint32(off + 4, true);
    const type = dv.getUint32(off + 8, true);
    const nameOff = off + 12;
    const descOff = nameOff + pad(namesz);
    const next = descOff + pad(descsz);
    if (descOff + descsz > bytes.length) {
      throw new Error(`note at ${where(off)} (namesz ${namesz}, descsz ${descsz}) runs past the end of PT_NOTE`);
    }
    let nameEnd = nameOff + namesz;
    while (nameEnd > nameOff && bytes[nameEnd - 1] === 0) nameEnd--;
    const name = new TextDecoder().decode(bytes.subarray(nameOff, nameEnd));
    notes.push({ name, type, desc: bytes.subarray(descOff, descOff + descsz) });
    off = next;
  }
  return notes;
}

/** Resolve PT_LOAD pieces into non-overlapping segments (lower p_paddr wins, then program-header order). */
function loadsToSegments(pieces: { start: number; end: number; fileOffset: number; order: number }[]): Segment[] {
  const sorted = pieces.filter((p) => p.end > p.start).sort((a, b) => a.start - b.start || a.order - b.order);
  const out: Segment[] = [];
  let covered = 0;
  for (const p of sorted) {
    const start = Math.max(p.start, covered);
    if (start >= p.end) continue;
    out.push({ start, end: p.end, fileOffset: p.fileOffset < 0 ? -1 : p.fileOffset + (start - p.start) });
    covered = p.end;
  }
  return out;
}

export async function openElf(uri: string, rest: string, opts: OpenOptions = {}): Promise<ElfCoreSource> {
  const u = parseFileUri('elf', uri, rest, opts, ['zerofill']);
  const zerofill = parseBool('elf', uri, 'zerofill', u.params.get('zerofill'));
  const f = openFile('elf', uri, u.path, u.writable);
  const bad = (msg: string, off?: number): PmiError =>
    new PmiError(
      'E_SOURCE_FORMAT',
      'elf',
      `${u.path}: ${msg}${off === undefined ? '' : ` (file offset ${hex(off)})`}`,
      off === undefined ? { uri } : { uri, file_offset: hex(off) },
    );
  try {
    const eh = preadSome(f.fd, EHDR_SIZE, 0);
    if (eh.length < 4 || eh[0] !== 0x7f || eh[1] !== 0x45 || eh[2] !== 0x4c || eh[3] !== 0x46) {
      throw bad('not an ELF file (no \\x7fELF magic)', 0);
    }
    if (eh.length < EHDR_SIZE) throw bad(`truncated ELF header (${eh.length} of 64 bytes)`, 0);
    if (eh[4] !== 2) throw bad(`EI_CLASS ${eh[4]}: only ELFCLASS64 cores are supported`, 4);
    if (eh[5] !== 1) throw bad(`EI_DATA ${eh[5]}: only little-endian (ELFDATA2LSB) cores are supported`, 5);
    if (eh[6] !== 1) throw bad(`EI_VERSION ${eh[6]} (expected 1)`, 6);
    const dv = new DataView(eh.buffer, eh.byteOffset, eh.byteLength);
    const type = dv.getUint16(16, true);
    if (type !== ET_CORE) throw bad(`e_type ${type} is not ET_CORE (4): not a memory dump`, 16);
    const machine = dv.getUint16(18, true);
    const phoff = u64(dv, 32, () => 'e_phoff', 'elf', uri);
    const shoff = u64(dv, 40, () => 'e_shoff', 'elf', uri);
    const phentsize = dv.getUint16(54, true);
    if (phentsize !== PHDR_SIZE) throw bad(`e_phentsize ${phentsize} (expected 56 for ELF64)`, 54);
    let phnum = dv.getUint16(56, true);
    if (phnum === PN_XNUM) {
      // More than 65534 program headers: the real count is sh_info of section header 0.
      const sh = preadSome(f.fd, SHDR_SIZE, shoff);
      if (shoff === 0 || sh.length < SHDR_SIZE) throw bad('e_phnum is PN_XNUM but section header 0 is missing', 40);
      phnum = new DataView(sh.buffer, sh.byteOffset).getUint32(44, true);
    }
    if (phoff + phnum * PHDR_SIZE > f.size) {
      throw bad(`program header table (${phnum} entries at ${hex(phoff)}) runs past the end of the file`, phoff);
    }
    const ph = preadSome(f.fd, phnum * PHDR_SIZE, phoff);
    const pdv = new DataView(ph.buffer, ph.byteOffset, ph.byteLength);
    const loads: ElfLoad[] = [];
    const notes: ElfNote[] = [];
    const pieces: { start: number; end: number; fileOffset: number; order: number }[] = [];
    for (let i = 0; i < phnum; i++) {
      const o = i * PHDR_SIZE;
      const at = phoff + o;
      const ptype = pdv.getUint32(o, true);
      if (ptype !== PT_LOAD && ptype !== PT_NOTE) continue;
      const flags = pdv.getUint32(o + 4, true);
      const offset = u64(pdv, o + 8, () => `p_offset of program header ${i}`, 'elf', uri);
      const vaddr = pdv.getBigUint64(o + 16, true);
      const paddr = u64(pdv, o + 24, () => `p_paddr of program header ${i}`, 'elf', uri);
      const filesz = u64(pdv, o + 32, () => `p_filesz of program header ${i}`, 'elf', uri);
      const memsz = u64(pdv, o + 40, () => `p_memsz of program header ${i}`, 'elf', uri);
      const palign = Number(pdv.getBigUint64(o + 48, true) & 0xffn);
      if (offset + filesz > f.size) {
        throw bad(
          `program header ${i} (${ptype === PT_LOAD ? 'PT_LOAD' : 'PT_NOTE'}) wants file bytes ` +
            `${hex(offset)}-${hex(offset + filesz)} but the file is only ${hex(f.size)} bytes: truncated dump`,
          at,
        );
      }
      if (ptype === PT_NOTE) {
        if (filesz > MAX_NOTES_BYTES) throw bad(`PT_NOTE of ${filesz} bytes is implausibly large`, at);
        const bytes = preadSome(f.fd, filesz, offset);
        try {
          notes.push(...parseNotes(bytes, palign === 8 ? 8 : 4, (n) => hex(offset + n)));
        } catch (e) {
          throw bad((e as Error).message, at);
        }
        continue;
      }
      if (memsz < filesz) throw bad(`PT_LOAD ${i}: p_memsz ${hex(memsz)} < p_filesz ${hex(filesz)}`, at);
      if (!Number.isSafeInteger(paddr + memsz)) throw bad(`PT_LOAD ${i}: p_paddr + p_memsz beyond 2^53`, at);
      loads.push({ paddr, vaddr, offset, filesz, memsz, flags });
      pieces.push({ start: paddr, end: paddr + filesz, fileOffset: offset, order: i });
      if (zerofill && memsz > filesz)
        pieces.push({ start: paddr + filesz, end: paddr + memsz, fileOffset: -1, order: i });
    }
    return new ElfCoreSource(
      {
        kind: 'elf',
        uri: normalisedUri('elf', u.absPath, { zerofill: zerofill ? '1' : undefined }),
        path: u.path,
        fd: f.fd,
        fileSize: f.size,
        readOnly: !u.writable,
        live: false,
        segments: loadsToSegments(pieces),
      },
      { machine, phnum, phoff },
      loads,
      notes,
      zerofill,
    );
  } catch (e) {
    closeQuietly(f.fd);
    throw e;
  }
}
