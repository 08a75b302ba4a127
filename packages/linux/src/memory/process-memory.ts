/**
 * A process's virtual memory, read through its own page tables.
 *
 * `mm->pgd` is a kernel virtual address (direct map) of the process's top-level table; it is
 * translated through the kernel's page tables to get the DTB. With page-table isolation the
 * kernel copy of the PGD maps user space too, so it is the right table for user reads.
 *
 * Many address spaces are read together: `readProcessBatch` issues every process's reads at once
 * (each address space walks breadth-first: `levels` + 1 round trips), so N processes on a remote
 * source cost about `levels + 1` round-trip times, not N × (levels + 1).
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
 * Read many ranges in many address spaces: all reads go out together (bounded concurrency);
 * each range is split at page boundaries so a missing page truncates rather than fails the range.
 */
export async function readProcessBatch(
  reads: readonly ProcessRead[],
  opts: { concurrency?: number } = {},
): Promise<ProcessReadResult[]> {
  const bySpace = new Map<X86Paging, number[]>();
  reads.forEach((r, i) => {
    const l = bySpace.get(r.space);
    if (l) l.push(i);
    else bySpace.set(r.space, [i]);
  });
  const out: ProcessReadResult[] = reads.map((r) => ({ bytes: new Uint8Array(Math.max(0, r.len)) }));
  const jobs = [...bySpace.entries()];
  const concurrency = Math.max(1, opts.concurrency ?? 512);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [space, idx] = jobs[next++];
      const ops: { va: bigint; buf: Uint8Array; read: number }[] = [];
      for (const i of idx) {
        const r = reads[i];
        const buf = out[i].bytes;
        let off = 0;
        while (off < r.len) {
          const va = r.va + BigInt(off);
          const inPage = 4096 - Number(va & 0xfffn);
          const n = Math.min(inPage, r.len - off);
          ops.push({ va, buf: buf.subarray(off, off + n), read: i });
          off += n;
        }
      }
      const failures = await space.readVirtualBatch(ops);
      if (failures.length === 0) continue;
      // Truncate each read at its first failed page.
      const firstFail = new Map<number, { off: number; error: PmiError }>();
      for (const f of failures) {
        const op = ops[f.index];
        const off = Number(op.va - reads[op.read].va);
        const cur = firstFail.get(op.read);
        if (!cur || off < cur.off) firstFail.set(op.read, { off, error: f.error });
      }
      for (const [i, { off, error }] of firstFail) {
        out[i] = { bytes: out[i].bytes.subarray(0, off), error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
  return out;
}

/** `cmdline`/`environ` bytes → text: NUL-separated strings, trailing NULs dropped. */
export function nulSeparated(bytes: Uint8Array): string[] {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  if (end === 0) return [];
  return Buffer.from(bytes.buffer, bytes.byteOffset, end).toString('utf8').split('\0');
}
