import { PageTableBuilder } from './page-table-builder.js';

export interface ScratchOptions {
  /** Virtual base of the stretch (default a 4-level direct-map address, 0xffff888000000000). */
  base?: bigint;
  /** Physical address it maps to (default 2 MiB). */
  pa0?: number;
  /** Mapped bytes (default 4 MiB, 4 KiB pages) inside 8 MiB of RAM. */
  size?: number;
  /** Alignment of `alloc` when none is given (default 64). */
  defaultAlign?: number;
}

/**
 * A mapped stretch of synthetic kernel memory for tests of the object layers: `alloc` hands out
 * virtual addresses, the writers put little-endian values there, and `pt.memory()` /
 * `pt.dtb` give a source and page table to read it back through. Allocation starts at base + 4 KiB,
 * so address `base` itself stays a recognisable "NULL-ish" page.
 */
export class KernelScratchMemory {
  readonly pt = new PageTableBuilder({ levels: 4, ramSize: 8 << 20 });
  readonly dv = new DataView(this.pt.ram.buffer);
  readonly base: bigint;
  readonly pa0: number;
  private next = 0x1000n;
  private readonly defaultAlign: number;

  constructor(opts: ScratchOptions = {}) {
    this.base = opts.base ?? 0xffff888000000000n;
    this.pa0 = opts.pa0 ?? 0x200000;
    this.defaultAlign = opts.defaultAlign ?? 64;
    this.pt.map(this.base, this.pa0, opts.size ?? 4 << 20, { pageSize: '4K' });
  }

  /** `size` zeroed bytes aligned to `align` (a power of two); returns their virtual address. */
  alloc(size: number, align = this.defaultAlign): bigint {
    this.next = (this.next + BigInt(align - 1)) & ~BigInt(align - 1);
    const va = this.base + this.next;
    this.next += BigInt(size);
    return va;
  }

  pa(va: bigint): number {
    return Number(va - this.base) + this.pa0;
  }

  u64(va: bigint, v: bigint): void {
    this.dv.setBigUint64(this.pa(va), BigInt.asUintN(64, v), true);
  }

  u32(va: bigint, v: number): void {
    this.dv.setUint32(this.pa(va), v >>> 0, true);
  }

  u16(va: bigint, v: number): void {
    this.dv.setUint16(this.pa(va), v, true);
  }

  u8(va: bigint, v: number): void {
    this.dv.setUint8(this.pa(va), v);
  }

  bytes(va: bigint, b: Uint8Array): void {
    this.pt.ram.set(b, this.pa(va));
  }

  /** A NUL-terminated string in a `size`-byte field (truncated to size − 1 bytes). */
  str(va: bigint, s: string, size: number): void {
    const b = new Uint8Array(size);
    b.set(Buffer.from(s).subarray(0, size - 1));
    this.bytes(va, b);
  }
}
