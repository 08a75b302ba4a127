/**
 * The VMA walks of maps on synthetic memory, laid out as the kernel writes them: a maple tree whose
 * root is an internal node (maple_arange_64, tagged with xa_mk_node's bit 1) with encoded leaf
 * children (address | type << 3 | MAPLE_ENODE_NULL, no tag bit), and the pre-6.1 `mm->mmap` list
 * (with a cycle: partial, bounded).
 */
import { describe, expect, it } from 'vitest';
import { KernelObjects, SymbolTableBuilder, X86Paging, parseBtf, KernelScratchMemory } from '@pmi/kernel';
import { BtfBuilder } from '../../kernel/test/fixtures/btf/builder.js';
import { vmaAddresses } from '../src/index.js';

const BASE = 0xffff888000000000n;
const ULONG_MAX = (1n << 64n) - 1n;

class Mem extends KernelScratchMemory {
  constructor() {
    super({ defaultAlign: 256 });
  }
}

/** mm_struct with the maple tree (`mmTree`) or the mmap list, and the maple node types (6.1+ layout). */
function btf(mmTree: boolean) {
  const b = new BtfBuilder();
  const uint = b.int('unsigned int', 4);
  const int = b.int('int', 4, { signed: true });
  const ulong = b.int('long unsigned int', 8);
  const uchar = b.int('unsigned char', 1);
  const voidp = b.ptr(0);
  const vma = b.struct('vm_area_struct', 24, [
    { name: 'vm_start', type: ulong, bits: 0 },
    { name: 'vm_end', type: ulong, bits: 64 },
    ...(mmTree ? [] : [{ name: 'vm_next', type: b.ptr(b.fwd('vm_area_struct')), bits: 128 }]),
  ]);
  const tree = b.struct('maple_tree', 16, [
    { name: 'ma_flags', type: uint, bits: 0 },
    { name: 'ma_root', type: voidp, bits: 64 },
  ]);
  b.struct('mm_struct', 32, [
    mmTree ? { name: 'mm_mt', type: tree, bits: 0 } : { name: 'mmap', type: b.ptr(vma), bits: 0 },
    { name: 'map_count', type: int, bits: 128 },
  ]);
  b.enum('maple_type', 4, [
    ['maple_dense', 0],
    ['maple_leaf_64', 1],
    ['maple_range_64', 2],
    ['maple_arange_64', 3],
  ]);
  const meta = b.struct('maple_metadata', 2, [
    { name: 'end', type: uchar, bits: 0 },
    { name: 'gap', type: uchar, bits: 8 },
  ]);
  const pad = b.struct('', 128, [
    { name: 'pad', type: b.array(voidp, uint, 15), bits: 0 },
    { name: 'meta', type: meta, bits: 960 },
  ]);
  const slots = b.union('', 128, [
    { name: 'slot', type: b.array(voidp, uint, 16), bits: 0 },
    { name: '', type: pad, bits: 0 },
  ]);
  b.struct('maple_range_64', 256, [
    { name: 'parent', type: voidp, bits: 0 },
    { name: 'pivot', type: b.array(ulong, uint, 15), bits: 64 },
    { name: '', type: slots, bits: 1024 },
  ]);
  b.struct('maple_arange_64', 248, [
    { name: 'parent', type: voidp, bits: 0 },
    { name: 'pivot', type: b.array(ulong, uint, 9), bits: 64 },
    { name: 'slot', type: b.array(voidp, uint, 10), bits: 640 },
    { name: 'gap', type: b.array(ulong, uint, 10), bits: 1280 },
    { name: 'meta', type: meta, bits: 1920 },
  ]);
  return parseBtf(b.build());
}

function kernel(m: Mem, mmTree: boolean): KernelObjects {
  const sb = new SymbolTableBuilder();
  sb.add('init_mm', 'D', BASE);
  return new KernelObjects({
    paging: new X86Paging(m.pt.memory(), m.pt.dtb, 4),
    btf: btf(mmTree),
    symbols: sb.build(),
  });
}

/** VMAs [start, end) of 4 KiB each, 8 KiB apart. */
function vmas(m: Mem, n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => {
    const v = m.alloc(32, 64);
    m.u64(v, 0x400000n + BigInt(i) * 0x2000n);
    m.u64(v + 8n, 0x401000n + BigInt(i) * 0x2000n);
    return v;
  });
}

/**
 * A maple_leaf_64 node holding `entries` (VMAs and the gaps between them, as NULL slots), its last
 * pivot `max`; returns the encoded node (address | type << 3 | MAPLE_ENODE_NULL).
 */
function leaf(m: Mem, vs: bigint[], first: number, max: bigint): bigint {
  const node = m.alloc(256);
  const slots: [bigint, bigint][] = []; // [entry, pivot]
  vs.forEach((v, i) => {
    const start = 0x400000n + BigInt(first + i) * 0x2000n;
    slots.push([0n, start - 1n], [v, start + 0xfffn]);
  });
  slots.push([0n, max]);
  expect(slots.length).toBeLessThanOrEqual(16);
  slots.forEach(([e, p], i) => {
    m.u64(node + 128n + BigInt(i * 8), e);
    if (i < 15) m.u64(node + 8n + BigInt(i * 8), p);
  });
  m.u8(node + 248n, slots.length - 1); // meta.end (used when the last pivot is 0)
  return node | (1n << 3n) | 4n;
}

describe('maps: VMA walks', () => {
  it('a two-level maple tree (arange root, leaf children without the root tag bit): every VMA in order', async () => {
    const m = new Mem();
    const mm = m.alloc(32);
    const vs = vmas(m, 12);
    const split = 0x400000n + 6n * 0x2000n - 1n; // the first leaf covers [0, split]
    const l0 = leaf(m, vs.slice(0, 6), 0, split);
    const l1 = leaf(m, vs.slice(6), 6, ULONG_MAX);
    const root = m.alloc(256);
    m.u64(root + 8n, split); // pivot[0]
    m.u64(root + 80n, l0); // slot[0]
    m.u64(root + 88n, l1); // slot[1]
    m.u8(root + 240n, 1); // meta.end
    m.u64(mm + 8n, root | (3n << 3n) | 4n | 2n); // ma_root: mte_mk_root (xa_mk_node)
    m.u64(mm + 16n, 12n);
    const k = kernel(m, true);
    const w = await vmaAddresses(k, mm);
    expect(w).toEqual({ vmas: vs, partial: false, method: 'maple_tree' });
  });

  it('a single-leaf maple tree and a tree whose root is one entry', async () => {
    const m = new Mem();
    const mm = m.alloc(32);
    const vs = vmas(m, 5);
    m.u64(mm + 8n, leaf(m, vs, 0, ULONG_MAX) | 2n);
    const k = kernel(m, true);
    expect((await vmaAddresses(k, mm)).vmas).toEqual(vs);
    m.u64(mm + 8n, vs[0]); // not tagged as a node: the only entry
    expect((await vmaAddresses(k, mm)).vmas).toEqual([vs[0]]);
  });

  it('the mmap list (pre-6.1): in order; a cycle gives the VMAs before it, partial, a warning', async () => {
    const m = new Mem();
    const mm = m.alloc(32);
    const vs = vmas(m, 7);
    vs.forEach((v, i) => m.u64(v + 16n, vs[i + 1] ?? 0n));
    m.u64(mm, vs[0]);
    m.u64(mm + 16n, 7n);
    const k = kernel(m, false);
    expect(await vmaAddresses(k, mm)).toEqual({ vmas: vs, partial: false, method: 'mmap_list' });
    m.u64(vs[4] + 16n, vs[1]);
    const warnings: string[] = [];
    const w = await vmaAddresses(k, mm, warnings);
    expect(w).toEqual({ vmas: vs.slice(0, 5), partial: true, method: 'mmap_list' });
    expect(warnings.join(' ')).toMatch(/mmap list of mm 0x[0-9a-f]+: .*(cycle|seen twice)/);
  });
});
