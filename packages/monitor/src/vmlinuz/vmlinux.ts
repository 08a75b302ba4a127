/**
 * The decompressed `vmlinux` of a bzImage: ELF64 program and section headers, the KASLR relocation
 * table appended after it, and relocation to a running kernel's virtual slide — what
 * arch/x86/boot/compressed/misc.c does (parse_elf, then handle_relocations).
 *
 * Addresses: "link VA" is where vmlinux was linked (0xffffffff81000000 + …); a PT_LOAD segment's
 * bytes land at `p_paddr − LOAD_PHYSICAL_ADDR` from the start of the decompressed image, so a link VA
 * maps to `va − __START_KERNEL_map` = p_paddr space (also for the zero-based .data..percpu segment,
 * whose p_vaddr is 0 but whose p_paddr follows the image).
 */
import { parseBzImage, decompressPayload, type BzImageHeader } from './bzimage.js';

export const START_KERNEL_MAP = 0xffffffff80000000n;

export interface ElfSegment {
  offset: number;
  vaddr: bigint;
  paddr: number;
  filesz: number;
  memsz: number;
  flags: number;
}

export interface ElfSection {
  name: string;
  type: number;
  flags: number;
  addr: bigint;
  offset: number;
  size: number;
}

export interface RelocTable {
  /** Link VAs (sign-extended from 32 bits) of 32-bit absolute fields: += delta. */
  rel32: Int32Array;
  /** 32-bit PC-relative fields against zero-based per-CPU symbols: −= delta (x86-64 only). */
  inv32: Int32Array;
  /** 64-bit absolute fields: += delta. */
  rel64: Int32Array;
  /** Byte offset in the decompressed output where the table starts (its first zero terminator). */
  start: number;
}

export interface VmlinuxTiming {
  readMs: number;
  decompressMs: number;
  parseMs: number;
  relocateMs: number;
}

export class Vmlinux {
  /** Uncovered bytes between segments in the loaded image, as the decompressor left them (before relocation). */
  private readonly gaps: { start: number; bytes: Uint8Array }[];
  private applied = 0;

  constructor(
    /** The decompressed output: ELF + relocation table (relocated in place by relocateTo). */
    readonly data: Uint8Array,
    readonly segments: readonly ElfSegment[],
    readonly sections: readonly ElfSection[],
    readonly relocs: RelocTable,
    /** LOAD_PHYSICAL_ADDR (the bzImage's pref_address, else the lowest PT_LOAD p_paddr). */
    readonly loadPhys: number,
    readonly header?: BzImageHeader,
    readonly timing?: VmlinuxTiming,
  ) {
    this.gaps = this.collectGaps();
  }

  /** Parse a decompressed vmlinux (+ appended relocs). */
  static fromElf(data: Uint8Array, header?: BzImageHeader, timing?: VmlinuxTiming): Vmlinux {
    const t0 = performance.now();
    const { segments, sections, elfEnd } = parseElf(data);
    const relocs = readRelocTable(data, elfEnd);
    const loadPhys = header ? Number(header.prefAddress) : Math.min(...segments.map((s) => s.paddr));
    const tm = timing ? { ...timing, parseMs: performance.now() - t0 } : undefined;
    return new Vmlinux(data, segments, sections, relocs, loadPhys, header, tm);
  }

  /** Read a bzImage file, decompress its payload and parse the vmlinux inside. */
  static async fromBzImage(file: Uint8Array, readMs = 0): Promise<Vmlinux> {
    const header = parseBzImage(file);
    const t0 = performance.now();
    const payload = file.subarray(header.payloadOffset, header.payloadOffset + header.payloadLength);
    const data = await decompressPayload(payload, header.compression, header.uncompressedSize);
    const decompressMs = performance.now() - t0;
    return Vmlinux.fromElf(data, header, { readMs, decompressMs, parseMs: 0, relocateMs: 0 });
  }

  /** The slide the image is currently relocated for (0 = as linked). */
  get slide(): number {
    return this.applied;
  }

  /**
   * Relocate for a virtual KASLR slide (runtime _text − link _text), as handle_relocations does:
   * 32-bit fields += delta, inverse 32-bit fields −= delta, 64-bit fields += delta. Relocation is
   * additive, so relocating again for another slide applies only the difference.
   */
  relocateTo(slide: bigint | number): void {
    const target = Number(slide);
    if (!Number.isSafeInteger(target) || Math.abs(target) >= 2 ** 31) throw new Error(`implausible slide ${slide}`);
    const delta = target - this.applied;
    if (delta === 0) return;
    const t0 = performance.now();
    const dv = new DataView(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    const off = (v: number, size: number): number => {
      const o = this.offsetOfPhys((v >>> 0) - 0x80000000, size);
      if (o < 0) throw new Error(`relocation at ${(v >>> 0).toString(16)} outside the loaded image`);
      return o;
    };
    const d32 = delta >>> 0;
    for (const v of this.relocs.rel32) {
      const o = off(v, 4);
      dv.setUint32(o, (dv.getUint32(o, true) + d32) >>> 0, true);
    }
    for (const v of this.relocs.inv32) {
      const o = off(v, 4);
      dv.setUint32(o, (dv.getUint32(o, true) - d32) >>> 0, true);
    }
    const dHi = Math.floor(delta / 2 ** 32) >>> 0; // sign of delta carried into the high word
    for (const v of this.relocs.rel64) {
      const o = off(v, 8);
      const lo = dv.getUint32(o, true) + d32;
      dv.setUint32(o, lo >>> 0, true);
      dv.setUint32(o + 4, (dv.getUint32(o + 4, true) + dHi + (lo >= 2 ** 32 ? 1 : 0)) >>> 0, true);
    }
    this.applied = target;
    if (this.timing) this.timing.relocateMs += performance.now() - t0;
  }

  /** File offset of `size` bytes at a link-time physical offset (va − __START_KERNEL_map), or −1. */
  offsetOfPhys(pa: number, size = 1): number {
    for (const s of this.segments) {
      if (pa >= s.paddr && pa + size <= s.paddr + s.filesz) return s.offset + (pa - s.paddr);
    }
    return -1;
  }

  /** File offset of a link VA, or −1 when no segment's file bytes hold it. */
  offsetOf(linkVa: bigint, size = 1): number {
    const pa = linkVa - START_KERNEL_MAP;
    if (pa < 0n || pa >= 1n << 32n) return -1;
    return this.offsetOfPhys(Number(pa), size);
  }

  /** Bytes at a link VA as loaded (relocated); bytes no segment covers are returned as the
   * decompressor leaves them (`gap` true for those), or zero past the image. */
  read(linkVa: bigint, len: number, into = new Uint8Array(len)): Uint8Array {
    let done = 0;
    while (done < len) {
      const va = linkVa + BigInt(done);
      const pa = Number(va - START_KERNEL_MAP);
      const seg = this.segments.find((s) => pa >= s.paddr && pa < s.paddr + s.filesz);
      if (seg) {
        const n = Math.min(len - done, seg.paddr + seg.filesz - pa);
        const o = seg.offset + (pa - seg.paddr);
        into.set(this.data.subarray(o, o + n), done);
        done += n;
        continue;
      }
      // next segment start above pa
      let next = Infinity;
      for (const s of this.segments) if (s.paddr > pa) next = Math.min(next, s.paddr);
      const n = Math.min(len - done, next - pa);
      const gapOut = pa - this.loadPhys;
      for (let k = 0; k < n; k++) into[done + k] = this.gapByte(gapOut + k);
      done += n;
    }
    return into;
  }

  /** Is the link VA inside some segment's file bytes? */
  covered(linkVa: bigint): boolean {
    return this.offsetOf(linkVa) >= 0;
  }

  section(name: string): ElfSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** The byte the decompressor leaves at output offset `o` where no segment was copied: parse_elf
   * memmoves each PT_LOAD to p_paddr − LOAD_PHYSICAL_ADDR, so an uncovered byte keeps the decompressed
   * ELF's byte at the same offset (never relocated: relocations only touch segment bytes). */
  gapByte(o: number): number {
    for (const g of this.gaps) if (o >= g.start && o < g.start + g.bytes.length) return g.bytes[o - g.start];
    return 0;
  }

  private collectGaps(): { start: number; bytes: Uint8Array }[] {
    const segs = [...this.segments].sort((a, b) => a.paddr - b.paddr);
    const out: { start: number; bytes: Uint8Array }[] = [];
    for (let i = 0; i + 1 < segs.length; i++) {
      const a = segs[i].paddr + segs[i].filesz - this.loadPhys;
      const b = segs[i + 1].paddr - this.loadPhys;
      // Up to the next page boundary after a segment (what a byte comparison meets); larger holes are
      // memory the kernel frees or never maps.
      const end = Math.min(b, (a + 0xfff) & ~0xfff);
      if (end > a && a >= 0 && end <= this.data.length) out.push({ start: a, bytes: this.data.slice(a, end) });
    }
    const last = segs.at(-1);
    if (last) {
      const a = last.paddr + last.filesz - this.loadPhys;
      const end = Math.min(this.data.length, (a + 0xfff) & ~0xfff);
      if (end > a && a >= 0) out.push({ start: a, bytes: this.data.slice(a, end) });
    }
    return out;
  }
}

/** ELF64 little-endian x86-64 headers. */
export function parseElf(data: Uint8Array): { segments: ElfSegment[]; sections: ElfSection[]; elfEnd: number } {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) throw new Error('decompressed payload is not an ELF file');
  if (b[4] !== 2 || b[5] !== 1) throw new Error('vmlinux is not ELF64 little-endian');
  const machine = b.readUInt16LE(0x12);
  if (machine !== 62) throw new Error(`vmlinux e_machine ${machine} is not x86-64`);
  const phoff = Number(b.readBigUInt64LE(0x20));
  const shoff = Number(b.readBigUInt64LE(0x28));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const shstrndx = b.readUInt16LE(0x3e);
  let elfEnd = Math.max(64, phoff + phnum * phentsize);
  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (b.readUInt32LE(o) !== 1) continue; // PT_LOAD
    const seg = {
      flags: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 8)),
      vaddr: b.readBigUInt64LE(o + 16),
      paddr: Number(b.readBigUInt64LE(o + 24)),
      filesz: Number(b.readBigUInt64LE(o + 32)),
      memsz: Number(b.readBigUInt64LE(o + 40)),
    };
    if (seg.offset + seg.filesz > b.length) throw new Error('PT_LOAD beyond the decompressed image');
    segments.push(seg);
    elfEnd = Math.max(elfEnd, seg.offset + seg.filesz);
  }
  if (segments.length === 0) throw new Error('vmlinux has no PT_LOAD segment');
  const sections: ElfSection[] = [];
  if (shoff && shnum && shoff + shnum * shentsize <= b.length) {
    elfEnd = Math.max(elfEnd, shoff + shnum * shentsize);
    const raw = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * shentsize;
      raw.push({
        nameOff: b.readUInt32LE(o),
        type: b.readUInt32LE(o + 4),
        flags: Number(b.readBigUInt64LE(o + 8)),
        addr: b.readBigUInt64LE(o + 16),
        offset: Number(b.readBigUInt64LE(o + 24)),
        size: Number(b.readBigUInt64LE(o + 32)),
      });
    }
    const strtab = raw[shstrndx];
    for (const s of raw) {
      let name = '';
      if (strtab && strtab.offset + s.nameOff < b.length) {
        const st = strtab.offset + s.nameOff;
        const nul = b.indexOf(0, st);
        name = b.toString('latin1', st, nul < 0 ? st : nul);
      }
      if (s.type !== 8 /* NOBITS */ && s.offset + s.size <= b.length) elfEnd = Math.max(elfEnd, s.offset + s.size);
      sections.push({ name, type: s.type, flags: s.flags, addr: s.addr, offset: s.offset, size: s.size });
    }
  }
  return { segments, sections, elfEnd };
}

/**
 * The table arch/x86/tools/relocs appends, read backwards from the end of the decompressed output as
 * handle_relocations does. Each entry is a link VA truncated to 32 bits; each list ends with a zero.
 * From the end: 32-bit relocations, then (x86-64 with a zero-based per-CPU area, up to 6.14) inverse
 * 32-bit relocations, then 64-bit relocations. Kernels whose per-CPU area is no longer zero-based
 * (6.15+) write no inverse list: the table then has two lists. The table starts right after the ELF
 * file (its first word is the 64-bit list's terminator), which tells the two formats apart.
 */
export function readRelocTable(data: Uint8Array, elfEnd: number): RelocTable {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let p = data.length - 4;
  const lists: Int32Array[] = [];
  while (p >= elfEnd && lists.length < 3) {
    const start = p;
    while (p >= elfEnd && dv.getUint32(p, true) !== 0) p -= 4;
    if (p < elfEnd) throw new Error(`relocation table: list ${lists.length + 1} has no terminator after the ELF image`);
    const n = (start - p) / 4;
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getInt32(start - 4 * i, true);
    lists.push(out);
    p -= 4;
  }
  if (lists.length < 2) throw new Error('no relocation table after vmlinux');
  if (p + 4 !== elfEnd)
    throw new Error(`relocation table starts at ${p + 4}, not at the end of the ELF image (${elfEnd})`);
  const [rel32, a, b] = lists;
  const inv32 = lists.length === 3 ? a : new Int32Array(0);
  const rel64 = lists.length === 3 ? b : a;
  for (const l of lists) {
    for (const v of l)
      if (v >= 0) throw new Error(`relocation entry 0x${(v >>> 0).toString(16)} is not a kernel address`);
  }
  return { rel32, inv32, rel64, start: p + 4 };
}
