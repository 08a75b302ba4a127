/**
 * The pid IDR walker (@pmi/linux pid-idr.ts) on synthetic kernels: an XArray of `struct pid *`
 * built by hand in scratch memory, with BTF shaped like the kernel's (xa_node.slots of 64 or — as
 * CONFIG_BASE_SMALL builds it — 16 entries: XA_CHUNK_SHIFT comes from the array length). Covers
 * multi-level trees, the head holding one entry directly, non-pointer entries, a pid whose number
 * is not its index, a node that does not fit its place, a cycle and the node limit.
 */
import { describe, expect, it } from 'vitest';
import {
  CountingMemory,
  KernelObjects,
  KernelScratchMemory,
  SymbolTableBuilder,
  X86Paging,
  parseBtf,
} from '@pmi/kernel';
import { pidIdrTasks, walkPidIdr, xaChunkShift, xaEntryKind } from '@pmi/linux';
import { BtfBuilder } from '../../kernel/test/fixtures/btf/builder.js';

const TASK_SIZE = 72;
const PID_SIZE = 56;

function buildBtf(slots: number) {
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  const uint = b.int('unsigned int', 4);
  const uchar = b.int('unsigned char', 1);
  const voidp = b.ptr(0);
  const hnode = b.nextId;
  b.struct('hlist_node', 16, [
    { name: 'next', type: hnode + 1, bits: 0 },
    { name: 'pprev', type: hnode + 2, bits: 64 },
  ]);
  b.ptr(hnode);
  b.ptr(hnode + 1);
  const hhead = b.struct('hlist_head', 8, [{ name: 'first', type: hnode + 1, bits: 0 }]);
  const xarray = b.struct('xarray', 16, [
    { name: 'xa_lock', type: int, bits: 0 },
    { name: 'xa_flags', type: uint, bits: 32 },
    { name: 'xa_head', type: voidp, bits: 64 },
  ]);
  const idr = b.struct('idr', 24, [
    { name: 'idr_rt', type: xarray, bits: 0 },
    { name: 'idr_base', type: uint, bits: 128 },
    { name: 'idr_next', type: uint, bits: 160 },
  ]);
  const ns = b.struct('pid_namespace', 32, [{ name: 'idr', type: idr, bits: 0 }]);
  const nsp = b.ptr(ns);
  const xnode = b.nextId;
  const nodeSize = 24 + slots * 8 + 24;
  b.struct('xa_node', nodeSize, [
    { name: 'shift', type: uchar, bits: 0 },
    { name: 'offset', type: uchar, bits: 8 },
    { name: 'count', type: uchar, bits: 16 },
    { name: 'nr_values', type: uchar, bits: 24 },
    { name: 'parent', type: xnode + 1, bits: 64 },
    { name: 'array', type: voidp, bits: 128 },
    { name: 'slots', type: xnode + 2, bits: 192 },
  ]);
  b.ptr(xnode);
  b.array(voidp, int, slots);
  b.enum('pid_type', 4, [
    ['PIDTYPE_PID', 0],
    ['PIDTYPE_TGID', 1],
    ['PIDTYPE_PGID', 2],
    ['PIDTYPE_SID', 3],
    ['PIDTYPE_MAX', 4],
  ]);
  const upid = b.struct('upid', 16, [
    { name: 'nr', type: int, bits: 0 },
    { name: 'ns', type: nsp, bits: 64 },
  ]);
  b.struct('pid', PID_SIZE, [
    { name: 'count', type: int, bits: 0 },
    { name: 'level', type: uint, bits: 32 },
    { name: 'tasks', type: b.array(hhead, int, 4), bits: 64 },
    { name: 'numbers', type: b.array(upid, int, 1), bits: 320 },
  ]);
  b.struct('task_struct', TASK_SIZE, [
    { name: 'pid', type: int, bits: 0 },
    { name: 'tgid', type: int, bits: 32 },
    { name: 'pid_links', type: b.array(hnode, int, 4), bits: 64 },
  ]);
  return { btf: parseBtf(b.build()), nodeSize };
}

interface Built {
  k: KernelObjects;
  tasks: Map<number, bigint>;
  m: KernelScratchMemory;
  root: bigint;
  nodes: bigint[];
}

/**
 * An IDR with the given pids (each with a task unless listed in `noTask`), built as the kernel
 * would: nodes of `slots` entries, the smallest height holding the largest pid.
 */
function build(
  slots: number,
  pids: number[],
  o: { noTask?: number[]; wrongNr?: Record<number, number>; extra?: (b: Built) => void } = {},
): Built {
  const { btf, nodeSize } = buildBtf(slots);
  const shift = Math.log2(slots);
  const m = new KernelScratchMemory();
  const ns = m.alloc(32);
  const tasks = new Map<number, bigint>();
  const pidOf = new Map<number, bigint>();
  for (const nr of pids) {
    const p = m.alloc(PID_SIZE);
    m.u32(p + 40n, o.wrongNr?.[nr] ?? nr);
    m.u64(p + 48n, ns);
    if (!o.noTask?.includes(nr)) {
      const t = m.alloc(TASK_SIZE);
      m.u32(t, nr);
      m.u32(t + 4n, nr);
      m.u64(p + 8n, t + 8n); // tasks[PIDTYPE_PID].first = &t->pid_links[PIDTYPE_PID]
      tasks.set(nr, t);
    } else {
      m.u64(p + 8n + 16n, 0xffff888000001000n); // only a PGID list: no task of type PID
    }
    pidOf.set(nr, p);
  }
  const max = Math.max(...pids);
  let height = 1;
  while (max >= slots ** height) height++;
  const nodes: bigint[] = [];
  const mk = (sh: number, parent: bigint, offset: number): bigint => {
    const n = m.alloc(nodeSize);
    m.u8(n, sh);
    m.u8(n + 1n, offset);
    m.u64(n + 8n, parent);
    nodes.push(n);
    return n;
  };
  const fill = (node: bigint, sh: number, base: number) => {
    for (let s = 0; s < slots; s++) {
      const lo = base + s * 2 ** sh;
      const hi = lo + 2 ** sh;
      const inside = pids.filter((p) => p >= lo && p < hi);
      if (inside.length === 0) continue;
      if (sh === 0) m.u64(node + 24n + BigInt(s * 8), pidOf.get(inside[0])!);
      else {
        const child = mk(sh - shift, node, s);
        m.u64(node + 24n + BigInt(s * 8), child + 2n);
        fill(child, sh - shift, lo);
      }
    }
  };
  const root = mk((height - 1) * shift, 0n, 0);
  fill(root, (height - 1) * shift, 0);
  m.u64(ns + 8n, root + 2n);
  const sb = new SymbolTableBuilder();
  sb.add('init_pid_ns', 'D', ns);
  const paging = new X86Paging(new CountingMemory(m.pt.memory()), m.pt.dtb, 4);
  const k = new KernelObjects({ paging, btf, symbols: sb.build() });
  const built = { k, tasks, m, root, nodes };
  o.extra?.(built);
  return built;
}

describe('xaEntryKind (the XArray entry ABI)', () => {
  it('tells nodes, siblings, retry, values and pointers apart', () => {
    expect(xaEntryKind(0n)).toBe('null');
    expect(xaEntryKind(0xffff888000123002n)).toBe('node');
    expect(xaEntryKind((5n << 2n) | 2n)).toBe('sibling');
    expect(xaEntryKind((256n << 2n) | 2n)).toBe('retry');
    expect(xaEntryKind((257n << 2n) | 2n)).toBe('retry');
    expect(xaEntryKind(0x2an * 2n + 1n)).toBe('value');
    expect(xaEntryKind(0xffff888000123440n)).toBe('pointer');
  });
});

describe.each([64, 16])('pid IDR walk, xa_node.slots[%i]', (slots) => {
  const shift = Math.log2(slots);

  it('XA_CHUNK_SHIFT from the slots array; every pid of a multi-level tree with its task', async () => {
    const pids = [1, 2, 3, slots - 1, slots, slots * 2 + 5, slots * slots + 7];
    const b = build(slots, pids, { noTask: [3] });
    expect(xaChunkShift(b.k)).toBe(shift);
    const w = await walkPidIdr(b.k);
    expect(w.partial).toBe(false);
    expect(w.warnings).toEqual([]);
    expect(w.chunkShift).toBe(shift);
    expect(w.entries.map((e) => e.nr)).toEqual(pids);
    const r = await pidIdrTasks(b.k);
    expect(r.partial).toBe(false);
    expect(r.pids).toBe(pids.length);
    expect(r.tasks.map((t) => [t.nr, t.task])).toEqual(pids.filter((p) => p !== 3).map((p) => [p, b.tasks.get(p)]));
  });

  it('a head holding one entry directly (index 0), and an empty IDR', async () => {
    const b = build(slots, [0]);
    const pid = b.m.alloc(PID_SIZE);
    b.m.u64(b.k.symbol('init_pid_ns') + 8n, pid);
    expect((await walkPidIdr(b.k)).entries).toEqual([{ nr: 0, pid }]);
    b.m.u64(b.k.symbol('init_pid_ns') + 8n, 0n);
    expect(await walkPidIdr(b.k)).toMatchObject({ entries: [], partial: false, nodes: 0 });
  });

  it('value, sibling and retry entries are not pids', async () => {
    const b = build(slots, [1, 2]);
    const leaf = b.nodes[b.nodes.length - 1];
    b.m.u64(leaf + 24n + 3n * 8n, 0x55n); // value entry
    b.m.u64(leaf + 24n + 4n * 8n, (1n << 2n) | 2n); // sibling
    b.m.u64(leaf + 24n + 5n * 8n, (256n << 2n) | 2n); // retry
    const w = await walkPidIdr(b.k);
    expect(w.entries.map((e) => e.nr)).toEqual([1, 2]);
    expect(w.partial).toBe(false);
  });

  it('a struct pid whose number is not its index: skipped with a warning (freed and reused)', async () => {
    const b = build(slots, [1, 2, 9], { wrongNr: { 9: 10 } });
    const r = await pidIdrTasks(b.k);
    expect(r.tasks.map((t) => t.nr)).toEqual([1, 2]);
    expect(r.partial).toBe(true);
    expect(r.warnings.join('\n')).toMatch(/pid 9: struct pid at 0x[0-9a-f]+ says nr 10/);
  });

  it('a node that does not fit its place (shift, offset): its subtree is skipped, partial', async () => {
    const pids = [1, slots + 1, slots * 2 + 1];
    const b = build(slots, pids);
    const child = b.nodes[2]; // the node of slot 1 (pids slots..2*slots-1)
    b.m.u8(child + 1n, 7); // wrong offset
    const w = await walkPidIdr(b.k);
    expect(w.entries.map((e) => e.nr)).toEqual([1, slots * 2 + 1]);
    expect(w.partial).toBe(true);
    expect(w.warnings.join('\n')).toMatch(/does not fit its place.*offset 7/);
  });

  it('a cycle back to the root and the node limit: bounded, partial, no hang', async () => {
    const pids = [1, slots + 1];
    const b = build(slots, pids);
    b.m.u64(b.root + 24n + BigInt((slots - 1) * 8), b.root + 2n); // the root's last slot → the root
    const w = await walkPidIdr(b.k);
    expect(w.entries.map((e) => e.nr)).toEqual(pids);
    expect(w.partial).toBe(true);
    expect(w.warnings.join('\n')).toMatch(/reached twice/);
    const limited = await walkPidIdr(b.k, { maxNodes: 1 });
    expect(limited.partial).toBe(true);
    expect(limited.nodes).toBe(1);
    expect(limited.warnings.join('\n')).toMatch(/more than 1 nodes/);
  });

  it('an unreadable node: a warning naming it, the rest of the tree', async () => {
    const pids = [1, slots + 1];
    const b = build(slots, pids);
    b.m.u64(b.root + 24n + 8n, 0xffff888100000002n); // slot 1 → a node outside mapped memory
    const w = await walkPidIdr(b.k);
    expect(w.entries.map((e) => e.nr)).toEqual([1]);
    expect(w.partial).toBe(true);
    expect(w.warnings.join('\n')).toMatch(/node 0xffff888100000000 .*unreadable/);
  });
});
