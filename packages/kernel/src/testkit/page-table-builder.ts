import { BufferMemory } from '@pmi/core';

/**
 * Builds real x86-64 page tables (4- or 5-level) in a flat buffer-backed RAM, so every layer
 * above translation can be tested on synthetic memory. Deliberately written independently of
 * src/paging (plain BigInt arithmetic on whole entries) so tests compare two implementations.
 *
 * RAM is [0, ramSize). Page tables are allocated downward from the top of RAM; `alloc()` hands
 * out data pages upward from `dataBase`. Mappings may point at physical addresses outside RAM
 * (translation does not read the target), but reads there fail with E_OUT_OF_RANGE.
 */
export type PageSize = 4096 | 2097152 | 1073741824 | '4K' | '2M' | '1G';

export interface MapOptions {
  pageSize?: PageSize;
  /** Writable (default true). */
  rw?: boolean;
  /** User-accessible (default false: kernel mapping). */
  user?: boolean;
  /** No-execute, bit 63 (default false). */
  nx?: boolean;
  /** Global (default false). */
  global?: boolean;
  /** Set the PAT bit (bit 12 on 2 MiB / 1 GiB leaves, bit 7 on 4 KiB PTEs). */
  pat?: boolean;
  /** Extra raw bits ORed into each leaf entry (e.g. 0x60n for accessed|dirty, 1n << 52n software bits). */
  extraBits?: bigint;
}

export interface BuilderOptions {
  levels?: 4 | 5;
  /** RAM size in bytes (default 64 MiB). */
  ramSize?: number;
  /** First data page handed out by alloc() (default 1 MiB). */
  dataBase?: number;
  /** Flags of intermediate entries (default P|RW|US|A = 0x27). */
  tableFlags?: bigint;
}

const P = 1n;
const RW = 2n;
const US = 4n;
const ACCESSED = 0x20n;
const PS = 0x80n;
const G = 0x100n;
const NX = 1n << 63n;
const ADDR_MASK = 0x000ffffffffff000n;

export function pageSizeBytes(s: PageSize | undefined): number {
  switch (s ?? 4096) {
    case 4096:
    case '4K':
      return 4096;
    case 2097152:
    case '2M':
      return 2097152;
    case 1073741824:
    case '1G':
      return 1073741824;
    default:
      throw new RangeError(`bad page size ${String(s)}`);
  }
}

export type BuilderWalk =
  | { mapped: true; pa: number; pageSize: number; level: number; entryAddress: number; entries: number[] }
  | { mapped: false; level: number; entryAddress: number; entries: number[] };

export class PageTableBuilder {
  readonly levels: 4 | 5;
  readonly ram: Uint8Array;
  readonly dtb: number;
  private readonly dv: DataView;
  private tableTop: number;
  private dataNext: number;
  private readonly tableFlags: bigint;
  /** Physical addresses of every table page allocated (the DTB first). */
  readonly tablePages: number[] = [];

  constructor(opts: BuilderOptions = {}) {
    this.levels = opts.levels ?? 4;
    if (this.levels !== 4 && this.levels !== 5) throw new RangeError('levels must be 4 or 5');
    const size = opts.ramSize ?? 64 * 1024 * 1024;
    if (size % 4096 !== 0) throw new RangeError('ramSize must be a multiple of 4096');
    this.ram = new Uint8Array(size);
    this.dv = new DataView(this.ram.buffer);
    this.tableTop = size;
    this.dataNext = opts.dataBase ?? 0x100000;
    this.tableFlags = opts.tableFlags ?? P | RW | US | ACCESSED;
    this.dtb = this.newTable();
  }

  /** Number of VA bits: 48 or 57. */
  get vaBits(): number {
    return this.levels === 5 ? 57 : 48;
  }

  private newTable(): number {
    this.tableTop -= 4096;
    if (this.tableTop < this.dataNext) throw new RangeError('PageTableBuilder: out of RAM for page tables');
    this.ram.fill(0, this.tableTop, this.tableTop + 4096);
    this.tablePages.push(this.tableTop);
    return this.tableTop;
  }

  /** Allocate physically contiguous, zeroed data memory (4 KiB granularity, `align` power of two). */
  alloc(size: number, align = 4096): number {
    const a = Math.ceil(this.dataNext / align) * align;
    const end = a + Math.ceil(size / 4096) * 4096;
    if (end > this.tableTop) throw new RangeError('PageTableBuilder: out of RAM for data');
    this.dataNext = end;
    return a;
  }

  /** Raw 64-bit entry at a physical address. */
  entryAt(addr: number): bigint {
    return this.dv.getBigUint64(addr, true);
  }

  setEntry(addr: number, value: bigint): void {
    this.dv.setBigUint64(addr, value, true);
  }

  /** Write bytes into RAM at a physical address. */
  write(pa: number, bytes: Uint8Array): void {
    this.ram.set(bytes, pa);
  }

  /** Index of va at a level (0 = top) — plain BigInt, independent of src/paging. */
  private index(va: bigint, level: number): number {
    const shift = 12n + 9n * BigInt(this.levels - 1 - level);
    return Number((BigInt.asUintN(64, va) >> shift) & 0x1ffn);
  }

  private checkCanonical(va: bigint): bigint {
    const u = BigInt.asUintN(64, va);
    const bits = BigInt(this.vaBits);
    const top = u >> (bits - 1n);
    const ones = (1n << (65n - bits)) - 1n;
    if (top !== 0n && top !== ones) throw new RangeError(`non-canonical VA 0x${u.toString(16)}`);
    return u;
  }

  /**
   * Map [va, va+size) to [pa, pa+size) with pages of opts.pageSize (va, pa, size aligned to it).
   * Creates missing tables; throws when a large page is in the way or a table is in the way of a
   * large page. Remapping an existing leaf overwrites it.
   */
  map(va: bigint, pa: number, size: number, opts: MapOptions = {}): this {
    const ps = pageSizeBytes(opts.pageSize);
    const u = this.checkCanonical(va);
    if (u % BigInt(ps) !== 0n || pa % ps !== 0 || size % ps !== 0 || size <= 0) {
      throw new RangeError(`map: va/pa/size must be multiples of the page size ${ps}`);
    }
    const leafLevel = this.levels - 1 - (ps === 4096 ? 0 : ps === 2097152 ? 1 : 2);
    for (let off = 0; off < size; off += ps) {
      const v = BigInt.asUintN(64, u + BigInt(off));
      let table = this.dtb;
      for (let level = 0; level < leafLevel; level++) {
        const e = table + this.index(v, level) * 8;
        let ent = this.entryAt(e);
        if ((ent & P) === 0n) {
          const t = this.newTable();
          ent = BigInt(t) | this.tableFlags;
          this.setEntry(e, ent);
        } else if (ent & PS) {
          throw new RangeError(`map: a large page is mapped over 0x${v.toString(16)}`);
        }
        table = Number(ent & ADDR_MASK);
      }
      const e = table + this.index(v, leafLevel) * 8;
      const old = this.entryAt(e);
      if (leafLevel < this.levels - 1 && (old & P) !== 0n && (old & PS) === 0n) {
        throw new RangeError(`map: page tables exist under the large page at 0x${v.toString(16)}`);
      }
      let ent = BigInt(pa + off) | P | ACCESSED;
      if (opts.rw !== false) ent |= RW;
      if (opts.user) ent |= US;
      if (opts.nx) ent |= NX;
      if (opts.global) ent |= G;
      if (leafLevel < this.levels - 1) ent |= PS;
      if (opts.pat) ent |= leafLevel < this.levels - 1 ? 0x1000n : 0x80n;
      if (opts.extraBits) ent |= opts.extraBits;
      this.setEntry(e, ent);
    }
    return this;
  }

  /** Clear the leaf entries of [va, va+size) (page size as mapped; tables are kept). */
  unmap(va: bigint, size: number): this {
    const u = this.checkCanonical(va);
    let off = 0;
    while (off < size) {
      const v = BigInt.asUintN(64, u + BigInt(off));
      const w = this.walk(v);
      if (!w.mapped) {
        off += 4096;
        continue;
      }
      this.setEntry(w.entryAddress, 0n);
      off += w.pageSize;
    }
    return this;
  }

  /**
   * Reference translation used by tests (independent of src/paging): entry addresses per level
   * and the physical address, or where the walk stops (level 0 = top) when unmapped.
   */
  walk(va: bigint): BuilderWalk {
    const u = BigInt.asUintN(64, va);
    let table = this.dtb;
    const entries: number[] = [];
    for (let level = 0; level < this.levels; level++) {
      const e = table + this.index(u, level) * 8;
      entries.push(e);
      const ent = this.entryAt(e);
      if ((ent & P) === 0n) return { mapped: false, level, entryAddress: e, entries };
      const remaining = this.levels - 1 - level; // 0 at PT
      if (remaining === 0 || ((ent & PS) !== 0n && remaining <= 2)) {
        const pageSize = 2 ** (12 + 9 * remaining);
        const mask = ADDR_MASK & ~BigInt(pageSize - 1);
        const pa = Number((ent & mask) | (u & BigInt(pageSize - 1)));
        return { mapped: true, pa, pageSize, level, entryAddress: e, entries };
      }
      table = Number(ent & ADDR_MASK);
    }
    throw new Error('unreachable');
  }

  /** A PhysicalMemory over the builder's RAM (shares the buffer: later map()/write() calls show). */
  memory(opts: { live?: boolean; uri?: string } = {}): BufferMemory {
    const m = new BufferMemory([{ start: 0, bytes: this.ram }], { uri: opts.uri ?? 'buffer:page-tables' });
    if (opts.live) {
      Object.defineProperty(m, 'info', { value: { ...m.info, live: true }, enumerable: true });
    }
    return m;
  }
}
