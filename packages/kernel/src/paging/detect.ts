import { findRange, hex, readPhys, type PhysicalMemory } from '@pmi/core';
import { entryFrame, PTE, type PagingLevels } from './levels.js';

export interface TopTableCheck {
  /** Looks like a kernel top-level table (see isKernelTopTable). */
  ok: boolean;
  dtb: string;
  levels: PagingLevels;
  /** Present entries in the user half (indices 0–255) and the kernel half (256–511). */
  userEntries: number;
  kernelEntries: number;
  /** Why it was rejected (empty when ok). */
  reasons: string[];
}

/**
 * Sanity heuristics for "this 4 KiB page is the kernel's own top-level table" (init_top_pgt /
 * swapper_pg_dir): no user-half entries (init_mm maps no user memory), entry 511 present (the
 * kernel image at 0xffffffff80000000 and the fixmap live there, for 4- and 5-level paging),
 * no PS bit (reserved at PML4/PML5) and every present entry pointing into the source's RAM.
 *
 * With PTI each process PGD has a *user* copy 4 KiB above the kernel copy that maps almost no
 * kernel memory; translation must use the kernel copy. A process's kernel copy also has user-half
 * entries, so `requireEmptyUserHalf: false` accepts it (the other checks still apply).
 */
export async function checkTopTable(
  mem: PhysicalMemory,
  dtb: number,
  levels: PagingLevels,
  opts: { requireEmptyUserHalf?: boolean; minKernelEntries?: number } = {},
): Promise<TopTableCheck> {
  const reasons: string[] = [];
  let userEntries = 0;
  let kernelEntries = 0;
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readPhys(mem, dtb, 4096);
  } catch (e) {
    reasons.push(`unreadable: ${(e as Error).message}`);
  }
  if (bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, 4096);
    for (let i = 0; i < 512; i++) {
      const lo = dv.getUint32(i * 8, true);
      const hi = dv.getUint32(i * 8 + 4, true);
      if ((lo & PTE.PRESENT) === 0) continue;
      if (i < 256) userEntries++;
      else kernelEntries++;
      if (lo & PTE.PS) reasons.push(`entry ${i} has PS=1 (reserved at the top level)`);
      const t = entryFrame(hi, lo);
      if (findRange(mem.info.ranges, t) < 0) reasons.push(`entry ${i} points outside RAM (${hex(t)})`);
    }
    if (opts.requireEmptyUserHalf !== false && userEntries > 0) reasons.push(`${userEntries} user-half entries`);
    if (kernelEntries < (opts.minKernelEntries ?? 2)) reasons.push(`only ${kernelEntries} kernel-half entries`);
    const lo511 = dv.getUint32(511 * 8, true);
    if ((lo511 & PTE.PRESENT) === 0) reasons.push('entry 511 (kernel image, fixmap) not present');
  }
  return { ok: reasons.length === 0, dtb: hex(dtb), levels, userEntries, kernelEntries, reasons: reasons.slice(0, 8) };
}

/** Boolean form of {@link checkTopTable} with the default (strict, init_top_pgt) heuristics. */
export async function isKernelTopTable(mem: PhysicalMemory, dtb: number, levels: PagingLevels): Promise<boolean> {
  return (await checkTopTable(mem, dtb, levels)).ok;
}

/** DTB from a CR3 value: bits 12–51 (drops PCID bits 0–11 and the no-flush bit 63). */
export function dtbFromCr3(cr3: bigint): number {
  return Number(BigInt.asUintN(64, cr3) & 0x000ffffffffff000n);
}
