/**
 * VMCOREINFO: the text note kdump-capable kernels keep in RAM (`OSRELEASE=…\nSYMBOL(x)=…`).
 * A cheap first try for release, KASLR offset, init_top_pgt and paging mode — never required
 * (kernels without crash support have none), and always cross-checked against kallsyms.
 */
import type { PhysicalMemory, PhysRange } from '@pmi/core';

export interface VmcoreInfo {
  physAddress: number;
  osrelease?: string;
  kernelOffset?: bigint;
  physBase?: bigint;
  pgtableL5Enabled?: number;
  symbols: Map<string, bigint>;
  numbers: Map<string, bigint>;
  raw: string;
}

const NEEDLE = Buffer.from('OSRELEASE=');
const MAX_NOTE = 8192;

export function parseVmcoreInfo(text: string, physAddress: number): VmcoreInfo {
  const info: VmcoreInfo = { physAddress, symbols: new Map(), numbers: new Map(), raw: text };
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1).trim();
    let m: RegExpExecArray | null;
    if (key === 'OSRELEASE') info.osrelease = value;
    else if (key === 'KERNELOFFSET' && /^[0-9a-f]+$/i.test(value)) info.kernelOffset = BigInt('0x' + value);
    else if ((m = /^SYMBOL\((\w+)\)$/.exec(key)) && /^[0-9a-f]+$/i.test(value))
      info.symbols.set(m[1], BigInt('0x' + value));
    else if ((m = /^NUMBER\((\w+)\)$/.exec(key)) && /^-?[0-9]+$/.test(value)) info.numbers.set(m[1], BigInt(value));
  }
  info.physBase = info.numbers.get('phys_base');
  const l5 = info.numbers.get('pgtable_l5_enabled');
  info.pgtableL5Enabled = l5 === undefined ? undefined : Number(l5);
  return info;
}

/**
 * Scan memory for VMCOREINFO text; return every copy that names init_top_pgt (the useful ones),
 * best first. Bounded: at most `maxHits` hits are examined.
 */
export async function findVmcoreInfo(
  mem: PhysicalMemory,
  opts: { ranges?: readonly PhysRange[]; window?: number; maxHits?: number } = {},
): Promise<VmcoreInfo[]> {
  const window = opts.window ?? 8 << 20;
  const maxHits = opts.maxHits ?? 64;
  const buf = Buffer.alloc(window + MAX_NOTE);
  const found: VmcoreInfo[] = [];
  let hits = 0;
  for (const r of opts.ranges ?? mem.info.ranges) {
    for (let start = r.start; start < r.end; start += window) {
      const len = Math.min(window + MAX_NOTE, r.end - start);
      const view = buf.subarray(0, len);
      const failures = await mem.readBatch([{ addr: start, buf: view }]);
      if (failures.length) continue;
      let at = view.indexOf(NEEDLE);
      while (at >= 0 && at < Math.min(window, len)) {
        if (++hits > maxHits) return found;
        const end = view.indexOf(0, at);
        const text = view.toString('latin1', at, end < 0 ? Math.min(len, at + MAX_NOTE) : end);
        if (text.includes('SYMBOL(init_top_pgt)=')) found.push(parseVmcoreInfo(text, start + at));
        at = view.indexOf(NEEDLE, at + 1);
      }
    }
  }
  return found;
}
