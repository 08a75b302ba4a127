/**
 * A process's virtual memory, read through its own page tables.
 *
 * `mm->pgd` is a kernel virtual address (direct map) of the process's top-level table; it is
 * translated through the kernel's page tables to get the DTB. With page-table isolation the
 * kernel copy of the PGD maps user space too, so it is the right table for user reads.
 *
 * Many address spaces are read together: `readProcessBatch` walks the page tables of every page of
 * every process level by level (one physical batch per level) and then reads all data in one batch,
 * so N processes on a remote source cost `levels + 1` round trips, not N × (levels + 1).
 */
import { PmiError } from '@pmi/core';
import { X86Paging, type KernelObjects } from '@pmi/kernel';

const ORIGIN = 'linux/memory';

/** Caches one X86Paging per address space (DTB) for a KernelObjects. */
export class ProcessSpaces {
  private readonly spaces = new Map<number, X86Paging>();
  constructor(readonly k: KernelObjects) {}

  /** The address space of each `mm->pgd` (kernel VAs), translated in one batch. */
  async forPgds(pgds: readonly bigint[]): Promise<(X86Paging | PmiError)[]> {
    const pas = await this.k.paging.translateBatch(pgds);
    return pas.map((pa, i) => {
      if (pa instanceof PmiError) {
        return new PmiError('E_PAGE_FAULT', ORIGIN, `mm->pgd 0x${pgds[i].toString(16)} does not translate`, {
          pgd: '0x' + pgds[i].toString(16),
        });
      }
      return this.forDtb(pa - (pa % 4096));
    });
  }

  forDtb(dtb: number): X86Paging {
    let p = this.spaces.get(dtb);
    if (!p) {
      // Per-process table pages are rarely shared: read 8-byte entries, not whole table pages.
      p = new X86Paging(this.k.paging.mem, dtb, this.k.paging.levels, { tableCache: false });
      this.spaces.set(dtb, p);
    }
    return p;
  }
}

export interface ProcessRead {
  space: X86Paging;
  va: bigint;
  len: number;
}

export interface ProcessReadResult {
  /** The bytes read from `va` on, page by page, up to the first page that did not read. */
  bytes: Uint8Array;
  /** Why the read stopped short (first unreadable page), if it did. */
  error?: PmiError;
}

/**
 * Read many ranges in many address spaces with a handful of physical batches: the page-table walks
 * of every page of every range advance together, one level per `readBatch` (deduplicated 8-byte
 * entries), then one `readBatch` reads all the data — `levels + 1` round trips for any number of
 * processes on a remote source. Each range is split at page boundaries, so a page that is not
 * present (or not in the source) truncates its range instead of failing it.
 */
export async function readProcessBatch(reads: readonly ProcessRead[]): Promise<ProcessReadResult[]> {
  const out: ProcessReadResult[] = reads.map((r) => ({ bytes: new Uint8Array(Math.max(0, r.len)) }));
  interface Page {
    read: number;
    off: number; // offset in the range
    len: number;
    va: bigint;
    hi: number; // VA bits 32..63
    lo: number; // VA bits 0..31
    table: number; // physical address of the table to look up next (then of the page frame)
    levels: number;
    level: number; // 0 = top
    done: boolean;
    error?: PmiError;
  }
  const pages: Page[] = [];
  reads.forEach((r, i) => {
    let off = 0;
    while (off < r.len) {
      const va = BigInt.asUintN(64, r.va + BigInt(off));
      const inPage = 4096 - Number(va & 0xfffn);
      const len = Math.min(inPage, r.len - off);
      pages.push({
        read: i,
        off,
        len,
        va,
        hi: Number(va >> 32n),
        lo: Number(va & 0xffffffffn),
        table: r.space.dtb,
        levels: r.space.levels,
        level: 0,
        done: false,
      });
      off += len;
    }
  });
  const mem = reads[0]?.space.mem;
  if (!mem) return out;
  const fault = (p: Page, why: string) => {
    p.done = true;
    p.error = new PmiError('E_PAGE_FAULT', ORIGIN, `page fault at 0x${p.va.toString(16)}: ${why}`, {
      virtual_address: '0x' + p.va.toString(16),
      reason: why,
    });
  };
  for (let round = 0; round < 5; round++) {
    const live = pages.filter((p) => !p.done && p.level < p.levels);
    if (live.length === 0) break;
    const entries = new Map<number, { buf: Uint8Array; failed: boolean }>();
    const addrOf = (p: Page) => {
      const shift = 12 + 9 * (p.levels - 1 - p.level);
      const idx = shift >= 32 ? (p.hi >>> (shift - 32)) & 511 : ((p.lo >>> shift) | (p.hi << (32 - shift))) & 511;
      return p.table + idx * 8;
    };
    for (const p of live) {
      const a = addrOf(p);
      if (!entries.has(a)) entries.set(a, { buf: new Uint8Array(8), failed: false });
    }
    const ops = [...entries].map(([addr, e]) => ({ addr, buf: e.buf }));
    for (const f of await mem.readBatch(ops)) entries.get(ops[f.index].addr)!.failed = true;
    for (const p of live) {
      const e = entries.get(addrOf(p))!;
      const shift = 12 + 9 * (p.levels - 1 - p.level);
      if (e.failed) {
        fault(p, 'unreadable_table');
        continue;
      }
      const dv = new DataView(e.buf.buffer);
      const lo = dv.getUint32(0, true);
      const hi = dv.getUint32(4, true);
      if ((lo & 1) === 0) {
        fault(p, 'not_present');
        continue;
      }
      const large = (shift === 21 || shift === 30) && (lo & 0x80) !== 0;
      const leaf = shift === 12 || large;
      const mask = shift === 30 ? 0xc0000000 : shift === 21 ? 0xffe00000 : 0xfffff000;
      const frame = (hi & 0xfffff) * 2 ** 32 + ((lo & (leaf ? mask : 0xfffff000)) >>> 0);
      if (leaf) {
        const inLarge = Number(p.va & ((1n << BigInt(shift)) - 1n)) - Number(p.va & 0xfffn);
        p.table = frame + inLarge + Number(p.va & 0xfffn);
        p.level = p.levels;
      } else {
        p.table = frame;
        p.level++;
      }
    }
  }
  const data = pages.filter((p) => !p.done);
  const failures = await mem.readBatch(
    data.map((p) => ({ addr: p.table, buf: out[p.read].bytes.subarray(p.off, p.off + p.len) })),
  );
  for (const f of failures) {
    const p = data[f.index];
    p.error = f.error;
  }
  // Truncate each read at its first failed page.
  const firstFail = new Map<number, { off: number; error: PmiError }>();
  for (const p of pages) {
    if (!p.error) continue;
    const cur = firstFail.get(p.read);
    if (!cur || p.off < cur.off) firstFail.set(p.read, { off: p.off, error: p.error });
  }
  for (const [i, { off, error }] of firstFail) out[i] = { bytes: out[i].bytes.subarray(0, off), error };
  return out;
}

/** `cmdline`/`environ` bytes → text: NUL-separated strings, trailing NULs dropped. */
export function nulSeparated(bytes: Uint8Array): string[] {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  if (end === 0) return [];
  return Buffer.from(bytes.buffer, bytes.byteOffset, end).toString('utf8').split('\0');
}
