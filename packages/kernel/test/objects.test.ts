import { describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import {
  CountingMemory,
  E_LIST,
  KernelObjects,
  PageTableBuilder,
  SymbolTableBuilder,
  X86Paging,
  collect,
  parseBtf,
  walkChain,
  type StructView,
} from '@pmi/kernel';
import { BtfBuilder } from './fixtures/btf/builder.js';

// ---------------------------------------------------------------- a small task-like BTF

function buildBtf() {
  const b = new BtfBuilder();
  const ulong = b.int('long unsigned int', 8);
  const int = b.int('int', 4, { signed: true });
  const uint = b.int('unsigned int', 4);
  const char = b.int('char', 1, { char: true });
  const long = b.int('long int', 8, { signed: true });
  const list_head = b.nextId;
  b.struct('list_head', 16, [
    { name: 'next', type: list_head + 1, bits: 0 },
    { name: 'prev', type: list_head + 1, bits: 64 },
  ]);
  b.ptr(list_head);
  const hlist_node = b.nextId;
  b.struct('hlist_node', 16, [
    { name: 'next', type: hlist_node + 1, bits: 0 },
    { name: 'pprev', type: b.nextId + 1, bits: 64 },
  ]);
  const hnp = b.ptr(hlist_node);
  b.ptr(hnp);
  b.struct('hlist_head', 8, [{ name: 'first', type: hnp, bits: 0 }]);
  const rb_node = b.nextId;
  b.struct('rb_node', 24, [
    { name: '__rb_parent_color', type: ulong, bits: 0 },
    { name: 'rb_right', type: rb_node + 1, bits: 64 },
    { name: 'rb_left', type: rb_node + 1, bits: 128 },
  ]);
  const rbp = b.ptr(rb_node);
  b.struct('rb_root', 8, [{ name: 'rb_node', type: rbp, bits: 0 }]);
  const state = b.enum('task_state', 4, [
    ['TASK_RUNNING', 0],
    ['TASK_INTERRUPTIBLE', 1],
    ['TASK_DEAD', 0x80],
  ]);
  const kuid = b.struct('kuid_t', 4, [{ name: 'val', type: uint, bits: 0 }]);
  const cred = b.struct('cred', 16, [
    { name: 'usage', type: int, bits: 0 },
    { name: 'uid', type: kuid, bits: 32 },
    { name: 'gid', type: uint, bits: 64 },
  ]);
  const credp = b.ptr(b.const(cred));
  const mm = b.struct('mm_struct', 16, [
    { name: 'pgd', type: ulong, bits: 0 },
    { name: 'map_count', type: int, bits: 64 },
  ]);
  const mmp = b.ptr(mm);
  const comm = b.array(char, int, 16);
  const counters = b.array(ulong, int, 2);
  const anon = b.union('', 4, [
    { name: 'prio', type: int, bits: 0 },
    { name: 'uprio', type: uint, bits: 0 },
  ]);
  const task = b.nextId;
  b.struct('task_struct', 152, [
    { name: 'state', type: state, bits: 0 },
    { name: 'flags', type: uint, bits: 32, bitSize: 3 },
    { name: 'in_execve', type: uint, bits: 35, bitSize: 1 },
    { name: 'nice', type: int, bits: 36, bitSize: 5 },
    { name: 'tasks', type: list_head, bits: 64 },
    { name: 'pid', type: int, bits: 192 },
    { name: 'tgid', type: int, bits: 224 },
    { name: 'comm', type: comm, bits: 256 },
    { name: 'mm', type: mmp, bits: 384 },
    { name: 'cred', type: credp, bits: 448 },
    { name: 'real_parent', type: task + 1, bits: 512 },
    { name: 'children', type: list_head, bits: 576 },
    { name: 'sibling', type: list_head, bits: 704 },
    { name: 'counters', type: counters, bits: 832 },
    { name: 'big', type: long, bits: 960 },
    { name: '', type: anon, bits: 1024 },
    { name: 'hnode', type: hlist_node, bits: 1088 },
  ]);
  const taskp = b.ptr(task);
  b.struct('vma', 32, [
    { name: 'vm_start', type: ulong, bits: 0 },
    { name: 'vm_rb', type: rb_node, bits: 64 },
  ]);
  const rq = b.struct('rq', 16, [
    { name: 'nr_running', type: uint, bits: 0 },
    { name: 'curr', type: taskp, bits: 64 },
  ]);
  const vrq = b.var('runqueues', rq);
  const vcur = b.var('current_task', taskp);
  b.datasec('.data..percpu', 64, [
    [vcur, 0, 8],
    [vrq, 16, 16],
  ]);
  return parseBtf(b.build());
}

const T_OFF = {
  state: 0,
  tasks: 8,
  pid: 24,
  tgid: 28,
  comm: 32,
  mm: 48,
  cred: 56,
  real_parent: 64,
  children: 72,
  sibling: 88,
  counters: 104,
  big: 120,
  prio: 128,
  hnode: 136,
};
const TASK_SIZE = 152;

// ---------------------------------------------------------------- synthetic memory

const BASE = 0xffff888000000000n;
const PA0 = 0x200000;
const SIZE = 4 << 20;

class Mem {
  readonly pt = new PageTableBuilder({ levels: 4, ramSize: 16 << 20 });
  readonly dv = new DataView(this.pt.ram.buffer);
  private next = 0x1000n;
  constructor() {
    this.pt.map(BASE, PA0, SIZE, { pageSize: '4K' });
  }
  pa(va: bigint): number {
    return Number(va - BASE) + PA0;
  }
  alloc(size: number, align = 64): bigint {
    this.next = (this.next + BigInt(align - 1)) & ~BigInt(align - 1);
    const va = BASE + this.next;
    this.next += BigInt(size);
    return va;
  }
  u64(va: bigint, v: bigint): void {
    this.dv.setBigUint64(this.pa(va), BigInt.asUintN(64, v), true);
  }
  u32(va: bigint, v: number): void {
    this.dv.setUint32(this.pa(va), v >>> 0, true);
  }
  u8(va: bigint, v: number): void {
    this.dv.setUint8(this.pa(va), v);
  }
  bytes(va: bigint, b: Uint8Array): void {
    this.pt.ram.set(b, this.pa(va));
  }
}

interface TaskSpec {
  pid: number;
  comm: string;
  uid?: number;
  mm?: boolean;
  parent?: bigint;
}

function writeTask(m: Mem, va: bigint, t: TaskSpec): void {
  m.u32(va + BigInt(T_OFF.pid), t.pid);
  m.u32(va + BigInt(T_OFF.tgid), t.pid);
  const c = new Uint8Array(16);
  c.set(Buffer.from(t.comm, 'utf8').subarray(0, 16));
  m.bytes(va + BigInt(T_OFF.comm), c);
  const cred = m.alloc(16);
  m.u32(cred + 4n, t.uid ?? 0);
  m.u32(cred + 8n, (t.uid ?? 0) + 1);
  m.u64(va + BigInt(T_OFF.cred), cred);
  if (t.mm) {
    const mm = m.alloc(16);
    m.u64(mm, 0x1234000n + BigInt(t.pid));
    m.u64(va + BigInt(T_OFF.mm), mm);
  }
  m.u64(va + BigInt(T_OFF.real_parent), t.parent ?? va);
}

/** A circular list: head list_head (inside `headTask` or standalone) and tasks linked through `tasks`. */
function linkList(m: Mem, head: bigint, nodes: bigint[]): void {
  const all = [head, ...nodes];
  for (let i = 0; i < all.length; i++) {
    m.u64(all[i], all[(i + 1) % all.length]);
    m.u64(all[i] + 8n, all[(i + all.length - 1) % all.length]);
  }
}

function setup(n = 10, opts: { remote?: boolean } = {}) {
  const btf = buildBtf();
  const m = new Mem();
  const init = m.alloc(TASK_SIZE);
  writeTask(m, init, { pid: 0, comm: 'swapper/0' });
  const tasks: bigint[] = [];
  for (let i = 1; i <= n; i++) {
    const va = m.alloc(TASK_SIZE);
    writeTask(m, va, { pid: i, comm: `task-${i}`, uid: 1000 + i, mm: i % 2 === 0, parent: i === 1 ? init : tasks[0] });
    tasks.push(va);
  }
  linkList(
    m,
    init + BigInt(T_OFF.tasks),
    tasks.map((t) => t + BigInt(T_OFF.tasks)),
  );
  const modules = m.alloc(16);
  linkList(m, modules, []);
  const sct = m.alloc(8 * 4, 4096);
  for (let i = 0; i < 4; i++) m.u64(sct + BigInt(8 * i), 0xffffffff81000000n + BigInt(i * 16));
  const after = m.alloc(8, 8);
  const pob = m.alloc(8);
  m.u64(pob, BASE);
  const nr = m.alloc(4);
  m.u32(nr, 2);
  const pco = m.alloc(16);
  const area0 = m.alloc(64);
  const area1 = m.alloc(64);
  m.u64(pco, area0);
  m.u64(pco + 8n, area1);
  m.u32(area1 + 16n, 7); // runqueues.nr_running on cpu 1
  m.u64(area1 + 24n, tasks[2] ?? init); // runqueues.curr
  m.u64(area1, tasks[3] ?? init); // current_task on cpu 1
  const prbVar = m.alloc(8);
  m.u64(prbVar, init); // a pointer global (to a task_struct, typed in the test)

  const sb = new SymbolTableBuilder();
  const syms: [string, bigint][] = [
    ['init_task', init],
    ['modules', modules],
    ['sys_call_table', sct],
    ['after_sct', after],
    ['page_offset_base', pob],
    ['nr_cpu_ids', nr],
    ['__per_cpu_offset', pco],
    ['init_task_ptr', prbVar],
  ];
  syms.sort((a, b) => (a[1] < b[1] ? -1 : 1));
  for (const [name, va] of syms) sb.add(name, 'D', va);
  const symbols = sb.build();
  const raw = m.pt.memory();
  const mem = opts.remote ? new CountingMemory(raw, { sync: false }) : new CountingMemory(raw);
  const paging = new X86Paging(mem, m.pt.dtb, 4);
  const k = new KernelObjects({ paging, btf, symbols });
  return { k, m, mem, init, tasks, modules, sct, btf };
}

const TASK_FIELDS = ['pid', 'tgid', 'comm', 'tasks', 'real_parent', 'mm', 'cred', 'flags', 'state'];

async function expectListError(it: AsyncIterable<StructView>): Promise<{ items: StructView[]; error: PmiError }> {
  const items: StructView[] = [];
  try {
    for await (const x of it) items.push(x);
  } catch (e) {
    expect(e).toBeInstanceOf(PmiError);
    return { items, error: e as PmiError };
  }
  throw new Error('the walk did not fail');
}

describe('layouts', () => {
  it('resolves offsets once, through anonymous unions, with the span of the fields', () => {
    const { k } = setup(1);
    const T = k.layout('task_struct', ['pid', 'comm', 'prio']);
    expect(T.field('pid').offset).toBe(24);
    expect(T.field('prio').offset).toBe(128);
    expect(T.start).toBe(24);
    expect(T.end).toBe(132);
    expect(T.stride).toBe(112);
    expect(k.layout('task_struct', ['pid', 'comm', 'prio'])).toBe(T); // cached
    const W = k.layout('task_struct');
    expect([W.start, W.end, W.size]).toEqual([0, TASK_SIZE, TASK_SIZE]);
  });

  it('missing fields: typed error naming struct and field; optional fields and has()', () => {
    const { k } = setup(1);
    let err: unknown;
    try {
      k.layout('task_struct', ['pid', 'no_such']);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PmiError);
    expect((err as PmiError).code).toBe('E_NOT_FOUND');
    expect((err as PmiError).data).toMatchObject({ struct: 'task_struct', field: 'no_such' });
    expect((err as PmiError).message).toContain('task_struct');
    const T = k.layout('task_struct', ['pid', '__state?', 'state?']);
    expect(T.has('__state')).toBe(false);
    expect(T.has('state')).toBe(true);
    expect(T.declared.map((f) => f.name)).toEqual(['pid', 'state']);
    expect(() => T.field('__state')).toThrow(/task_struct has no field '__state'/);
    expect(() => k.layout('no_struct')).toThrow(PmiError);
  });

  it('pointer paths become hops: one per distinct pointer chain', () => {
    const { k } = setup(1);
    const T = k.layout('task_struct', [
      'pid',
      'cred.uid',
      'cred.gid',
      'real_parent.pid',
      'real_parent.cred.uid',
      'mm.pgd',
    ]);
    expect(T.hops.map((h) => [h.ptrOffset, h.level, h.start, h.end])).toEqual([
      [56, 1, 4, 12], // cred → uid..gid
      [64, 1, 24, 64], // real_parent → pid .. cred pointer
      [56, 2, 4, 8], // real_parent → cred → uid
      [48, 1, 0, 8], // mm → pgd
    ]);
    expect(T.depth).toBe(2);
    expect(T.start).toBe(24);
    expect(T.end).toBe(72);
  });
});

describe('struct views', () => {
  it('decodes ints, strings, enums, bitfields, pointers, arrays, nested structs', async () => {
    const { k, m, init, tasks } = setup(3);
    const t = tasks[1];
    m.u32(t + BigInt(T_OFF.state), 0x80);
    // flags = 5 (3 bits @32), in_execve = 1 (@35), nice = -3 (5 bits @36, signed)
    const nice = -3 & 0x1f;
    m.u8(t + 4n, 5 | (1 << 3) | ((nice & 0xf) << 4));
    m.u8(t + 5n, nice >> 4);
    m.u64(t + BigInt(T_OFF.counters + 8), 0xfedcba9876543210n);
    m.u64(t + BigInt(T_OFF.big), -5n);
    m.u32(t + BigInt(T_OFF.prio), -7);
    m.bytes(t + BigInt(T_OFF.comm), Buffer.from('0123456789abcdef')); // no NUL
    const T = k.layout('task_struct');
    const o = await k.read(t, T);
    expect(o.u32('pid')).toBe(2);
    expect(o.int('pid')).toBe(2);
    expect(o.str('comm')).toBe('0123456789abcdef');
    expect(o.enumName('state')).toBe('TASK_DEAD');
    expect(o.int('flags')).toBe(5);
    expect(o.bool('in_execve')).toBe(true);
    expect(o.int('nice')).toBe(-3);
    expect(o.int('prio')).toBe(-7);
    expect(o.u32('uprio')).toBe(-7 >>> 0);
    expect(o.int('big')).toBe(-5n);
    expect(o.num('big')).toBe(-5);
    expect(o.array('counters', 1)).toBe(0xfedcba9876543210n);
    expect(o.length('counters')).toBe(2);
    expect(() => o.array('counters', 2)).toThrow(/out of bounds/);
    expect(o.ptr('real_parent')).toBe(tasks[0]);
    expect(o.isNull('mm')).toBe(false);
    const tl = o.struct('tasks');
    expect(tl.layout.name).toBe('list_head');
    expect(tl.va).toBe(t + BigInt(T_OFF.tasks));
    expect(tl.ptr('next')).toBe(tasks[2] + BigInt(T_OFF.tasks));
    expect(tl.ptr('prev')).toBe(tasks[0] + BigInt(T_OFF.tasks));
    expect(o.addressOf('children')).toBe(t + BigInt(T_OFF.children));
    expect(T.containerOf(tl.va, 'tasks')).toBe(t);
    expect(() => o.u32('comm')).toThrow(/16 bytes, not u32/);
    expect(() => o.u32('flags')).toThrow(/bitfield/);
    expect(() => o.str('mm')).toThrow(/readString/);
    expect(o.toJSON()).toMatchObject({ _struct: 'task_struct' });
    const i0 = await k.read(init, T);
    expect(i0.str('comm')).toBe('swapper/0');
    expect(i0.isNull('mm')).toBe(true);
  });

  it('a field-list layout reads only its span; undeclared fields inside it resolve lazily, outside fail', async () => {
    const { k, tasks, mem } = setup(2);
    const T = k.layout('task_struct', ['pid', 'comm']);
    await k.read(tasks[1], T); // tables cached
    mem.reset();
    const o = await k.read(tasks[0], T);
    expect(mem.bytes).toBe(T.end - T.start);
    expect(o.int('tgid')).toBe(1); // inside [24, 48)
    expect(() => o.ptr('mm')).toThrow(/outside the bytes this layout reads/);
  });

  it('follows pointers in batches; NULL and unreadable pointers only affect their fields', async () => {
    const { k, m, tasks } = setup(4);
    m.u64(tasks[2] + BigInt(T_OFF.cred), BASE + BigInt(SIZE) + 0x1000n); // unmapped
    const T = k.layout('task_struct', [
      'pid',
      'cred.uid',
      'cred.gid',
      'mm.pgd',
      'real_parent.pid',
      'real_parent.cred.uid',
    ]);
    const rs = await k.readStructs(tasks, T);
    const os = rs as StructView[];
    expect(os.every((o) => !(o instanceof PmiError))).toBe(true);
    expect(os[0].u32('cred.uid')).toBe(1001);
    expect(os[0].u32('cred.gid')).toBe(1002);
    expect(os[0].reached('mm.pgd')).toBe(false);
    const e = os[0].derefError('mm.pgd')!;
    expect(e.code).toBe('E_PAGE_FAULT');
    expect(e.data.reason).toBe('null_pointer');
    expect(() => os[0].u64('mm.pgd')).toThrow(/NULL pointer/);
    expect(os[1].u64('mm.pgd')).toBe(0x1234002n);
    expect(os[1].int('real_parent.pid')).toBe(1);
    expect(os[1].u32('real_parent.cred.uid')).toBe(1001);
    expect(os[1].addressOf('real_parent.pid')).toBe(tasks[0] + BigInt(T_OFF.pid));
    expect(os[2].reached('cred.uid')).toBe(false);
    expect(os[2].derefError('cred.uid')!.code).toBe('E_PAGE_FAULT');
    expect(os[2].int('pid')).toBe(3);
    expect(os[2].reached('mm.pgd')).toBe(false); // mm is NULL for odd pids
    expect(os[3].u32('cred.uid')).toBe(1004);
  });

  it('a target many objects point at is read once and copied to all of them (errors too)', async () => {
    const { k, m, mem, tasks } = setup(50, { remote: true });
    const T = k.layout('task_struct', ['pid', 'real_parent.pid', 'real_parent.comm']);
    const roots = k.layout('task_struct', ['pid']); // the same root span, no pointer hop
    await k.readStructs(tasks.slice(0, 1), T); // warm the table cache
    mem.reset();
    await k.readStructs(tasks.slice(1), roots);
    const rootOps = mem.ops;
    mem.reset();
    const rs = (await k.readStructs(tasks.slice(1), T)) as StructView[]; // all 49 have parent tasks[0]
    for (const o of rs) {
      expect(o.int('real_parent.pid')).toBe(1);
      expect(o.str('real_parent.comm')).toBe('task-1');
    }
    expect(mem.ops - rootOps).toBeLessThanOrEqual(2); // the parent once (2 if its span crosses a page), not 49×
    // The shared parent pointer unreadable: every object gets the error, none gets bytes.
    for (const t of tasks.slice(1, 4)) m.u64(t + BigInt(T_OFF.real_parent), BASE + BigInt(SIZE) + 0x2000n);
    const bad = (await k.readStructs(tasks.slice(1, 4), T)) as StructView[];
    for (const o of bad) {
      expect(o.reached('real_parent.pid')).toBe(false);
      expect(o.derefError('real_parent.pid')!.code).toBe('E_PAGE_FAULT');
    }
  });

  it('an unreadable object is a PmiError in its slot, naming struct and VA', async () => {
    const { k, tasks } = setup(2);
    const bad = BASE + BigInt(SIZE) + 0x40n;
    const rs = await k.readStructs([tasks[0], bad, tasks[1]], k.layout('task_struct', ['pid']));
    expect(rs[1]).toBeInstanceOf(PmiError);
    expect((rs[1] as PmiError).code).toBe('E_PAGE_FAULT');
    expect((rs[1] as PmiError).data).toMatchObject({ struct: 'task_struct', object: '0x' + bad.toString(16) });
    expect((rs[2] as StructView).int('pid')).toBe(2);
    await expect(k.read(bad, k.layout('task_struct', ['pid']))).rejects.toThrow(/task_struct at 0x/);
  });

  it('batched: many objects with two pointer levels cost a few readBatch calls on a remote source', async () => {
    const { k, mem, tasks } = setup(200, { remote: true });
    const T = k.layout('task_struct', ['pid', 'comm', 'cred.uid', 'real_parent.tgid', 'real_parent.cred.uid']);
    await k.readStructs(tasks.slice(0, 1), T); // warm the table cache
    mem.reset();
    const rs = await k.readStructs(tasks, T);
    expect(rs.filter((r) => r instanceof PmiError)).toHaveLength(0);
    expect(mem.batches).toBeLessThanOrEqual(3); // roots, level-1 targets, level-2 targets
    const cold = setup(200, { remote: true });
    await cold.k.readStructs(cold.tasks, cold.k.layout('task_struct', ['pid', 'comm', 'cred.uid', 'real_parent.tgid']));
    expect(cold.mem.batches).toBeLessThanOrEqual(4 + 1 + 1); // table walk levels + data + one hop level
  });
});

describe('list walks', () => {
  it('walks N items in order (head excluded), container_of applied, in chunked batches', async () => {
    const { k, init, tasks, mem } = setup(300, { remote: true });
    const T = k.layout('task_struct', TASK_FIELDS);
    const head = init + BigInt(T_OFF.tasks);
    mem.reset();
    const pids: number[] = [];
    const vas: bigint[] = [];
    for await (const t of k.walkList(head, T, 'tasks', { chunk: 100 })) {
      pids.push(t.int('pid') as number);
      vas.push(t.va);
    }
    expect(pids).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(vas).toEqual(tasks);
    // remote: one batch per link (300 + head), one per 100 objects, 4 table levels on the cold cache
    expect(mem.batches).toBe(301 + 3 + 4);
    const r = await k.collectList(head, T, 'tasks');
    expect(r.error).toBeUndefined();
    expect(r.items).toHaveLength(300);
  });

  it('an empty list and a bare list_head global (modules)', async () => {
    const { k, modules } = setup(1);
    const r = await k.collectList(modules, k.layout('task_struct', ['pid']), 'tasks');
    expect(r).toEqual({ items: [] });
  });

  it('a cycle not through the head: partial results then E_LIST {at, after}, no hang', async () => {
    const { k, m, init, tasks } = setup(6);
    const node = (i: number) => tasks[i] + BigInt(T_OFF.tasks);
    m.u64(node(4), node(2)); // 1 2 3 4 5 → 3 …
    const T = k.layout('task_struct', ['pid']);
    const { items, error } = await expectListError(k.walkList(init + BigInt(T_OFF.tasks), T, 'tasks'));
    expect(items.map((t) => t.int('pid'))).toEqual([1, 2, 3, 4, 5]);
    expect(error.code).toBe(E_LIST);
    expect(error.data).toMatchObject({
      list: 'task_struct.tasks',
      reason: 'cycle',
      at: '0x' + node(2).toString(16),
      after: '0x' + node(4).toString(16),
      count: 5,
    });
    const r = await k.collectList(init + BigInt(T_OFF.tasks), T, 'tasks', { name: 'init_task.tasks' });
    expect(r.items).toHaveLength(5);
    expect(r.error!.data.list).toBe('init_task.tasks');
  });

  it('walkChain follows a pointer field from object to object until NULL; a loop is E_LIST cycle', async () => {
    const { k, m, init, tasks } = setup(4);
    // real_parent chain: tasks[3] → tasks[0] → init → (init's own parent, set below)
    m.u64(init + BigInt(T_OFF.real_parent), 0n);
    const T = k.layout('task_struct', ['pid', 'real_parent']);
    const ok = await collect(walkChain(k, tasks[3], T, 'real_parent', 'real_parent', { name: 'parents' }));
    expect(ok.error).toBeUndefined();
    expect(ok.items.map((t) => t.int('pid'))).toEqual([1, 0]);
    m.u64(init + BigInt(T_OFF.real_parent), init); // init is its own parent: a loop
    const looped = await collect(walkChain(k, tasks[3], T, 'real_parent', 'real_parent', { name: 'parents' }));
    expect(looped.items.map((t) => t.int('pid'))).toEqual([1, 0]);
    expect(looped.error!.data).toMatchObject({ list: 'parents', reason: 'cycle', at: '0x' + init.toString(16) });
  });

  it('a self-loop on the first node is a cycle after one item', async () => {
    const { k, m, init, tasks } = setup(3);
    const n0 = tasks[0] + BigInt(T_OFF.tasks);
    m.u64(n0, n0);
    const r = await k.collectList(init + BigInt(T_OFF.tasks), k.layout('task_struct', ['pid']), 'tasks');
    expect(r.items).toHaveLength(1);
    expect(r.error!.data).toMatchObject({ reason: 'cycle', at: '0x' + n0.toString(16) });
  });

  it('a link into unmapped memory: partial results then E_LIST unreadable with the VA and the cause', async () => {
    for (const remote of [false, true]) {
      const { k, m, init, tasks } = setup(6, { remote });
      const bad = BASE + BigInt(SIZE) + 0x2000n + BigInt(T_OFF.tasks);
      m.u64(tasks[2] + BigInt(T_OFF.tasks), bad);
      const { items, error } = await expectListError(
        k.walkList(init + BigInt(T_OFF.tasks), k.layout('task_struct', ['pid', 'comm']), 'tasks'),
      );
      expect(items.map((t) => t.str('comm'))).toEqual(['task-1', 'task-2', 'task-3']);
      expect(error.code).toBe(E_LIST);
      expect(error.data).toMatchObject({ reason: 'unreadable', at: '0x' + bad.toString(16), count: 3 });
      expect((error.cause as PmiError).code).toBe('E_PAGE_FAULT');
    }
  });

  it('an object whose struct span is unreadable though its node is readable', async () => {
    const { k, m, init, tasks } = setup(3);
    // node 2's list_head is readable but its cred pointer leads nowhere: only a deref field fails
    m.u64(tasks[1] + BigInt(T_OFF.cred), 0n);
    const r = await k.collectList(init + BigInt(T_OFF.tasks), k.layout('task_struct', ['pid', 'cred.uid']), 'tasks');
    expect(r.error).toBeUndefined();
    expect(r.items[1].reached('cred.uid')).toBe(false);
    // an object straddling into an unmapped page: the node (first 24 bytes) reads, the span does not
    const { k: k2, m: m2, init: init2 } = setup(1);
    const edge = BASE + BigInt(SIZE) - 16n - BigInt(T_OFF.tasks); // tasks member is the last 16 mapped bytes
    linkList(m2, init2 + BigInt(T_OFF.tasks), [edge + BigInt(T_OFF.tasks)]);
    const r2 = await k2.collectList(init2 + BigInt(T_OFF.tasks), k2.layout('task_struct', ['pid', 'comm']), 'tasks');
    expect(r2.items).toHaveLength(0);
    expect(r2.error!.data).toMatchObject({ reason: 'unreadable', count: 0 });
  });

  it('NULL next, length limit, abort signal', async () => {
    const { k, m, init, tasks } = setup(5);
    const T = k.layout('task_struct', ['pid']);
    const head = init + BigInt(T_OFF.tasks);
    let r = await k.collectList(head, T, 'tasks', { max: 3 });
    expect(r.items).toHaveLength(3);
    expect(r.error!.data).toMatchObject({ reason: 'too_long', count: 3 });
    r = await k.collectList(head, T, 'tasks', { max: 5 });
    expect(r.error).toBeUndefined();
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(k.collectList(head, T, 'tasks', { signal: ac.signal })).rejects.toThrow('stop');
    m.u64(tasks[1] + BigInt(T_OFF.tasks), 0n);
    r = await k.collectList(head, T, 'tasks');
    expect(r.items).toHaveLength(2);
    expect(r.error!.data).toMatchObject({ reason: 'null_link', at: '0x0' });
    await expect(k.collectList(BASE + BigInt(SIZE) + 8n, T, 'tasks')).resolves.toMatchObject({
      items: [],
      error: { code: E_LIST },
    });
  });

  it('a ring of 20k nodes walks quickly', async () => {
    const { k, m, init } = setup(0);
    const T = k.layout('task_struct', ['pid']);
    const vas: bigint[] = [];
    for (let i = 0; i < 20000; i++) {
      const va = m.alloc(TASK_SIZE, 8);
      m.u32(va + BigInt(T_OFF.pid), i + 1);
      vas.push(va);
    }
    linkList(
      m,
      init + BigInt(T_OFF.tasks),
      vas.map((v) => v + BigInt(T_OFF.tasks)),
    );
    const t0 = performance.now();
    let n = 0;
    for await (const t of k.walkList(init + BigInt(T_OFF.tasks), T, 'tasks')) if (t.int('pid') === n + 1) n++;
    expect(n).toBe(20000);
    expect(performance.now() - t0).toBeLessThan(5000);
  });
});

describe('hlist and rb-tree walks', () => {
  it('hlist: NULL-terminated, cycle detected', async () => {
    const { k, m, tasks } = setup(4);
    const head = m.alloc(8);
    const node = (i: number) => tasks[i] + BigInt(T_OFF.hnode);
    m.u64(head, node(0));
    m.u64(node(0), node(1));
    m.u64(node(1), node(3));
    m.u64(node(3), 0n);
    const T = k.layout('task_struct', ['pid']);
    const pids: unknown[] = [];
    for await (const t of k.walkHlist(head, T, 'hnode')) pids.push(t.int('pid'));
    expect(pids).toEqual([1, 2, 4]);
    m.u64(node(3), node(1));
    const { items, error } = await expectListError(k.walkHlist(head, T, 'hnode'));
    expect(items).toHaveLength(3);
    expect(error.data).toMatchObject({ reason: 'cycle', at: '0x' + node(1).toString(16) });
  });

  it('rb-tree: in-order, one batch per level, cycle detected', async () => {
    const { k, m } = setup(0);
    const keys = [50, 30, 70, 20, 40, 60, 80, 35];
    const va = new Map<number, bigint>();
    for (const key of keys) {
      const v = m.alloc(32, 8);
      m.u64(v, BigInt(key));
      va.set(key, v);
    }
    const rb = (key: number) => va.get(key)! + 8n;
    const link = (p: number, l: number | 0, r: number | 0) => {
      m.u64(rb(p) + 16n, l ? rb(l) : 0n);
      m.u64(rb(p) + 8n, r ? rb(r) : 0n);
    };
    link(50, 30, 70);
    link(30, 20, 40);
    link(70, 60, 80);
    link(20, 0, 0);
    link(40, 35, 0);
    link(35, 0, 0);
    link(60, 0, 0);
    link(80, 0, 0);
    const root = m.alloc(8);
    m.u64(root, rb(50));
    const V = k.layout('vma');
    const got: unknown[] = [];
    for await (const v of k.walkRbTree(root, V, 'vm_rb')) got.push(Number(v.u64('vm_start')));
    expect(got).toEqual([...keys].sort((a, b) => a - b));
    link(80, 30, 0); // back edge
    const { items, error } = await expectListError(k.walkRbTree(root, V, 'vm_rb'));
    expect(error.data).toMatchObject({ reason: 'cycle', at: '0x' + rb(30).toString(16) });
    expect(items.length).toBeGreaterThan(0);
  });
});

describe('globals and per-CPU', () => {
  it('init_task, a list_head global, scalars, a symbol-sized pointer array, a pointer global', async () => {
    const { k, init, sct } = setup(2);
    const it = await k.global('init_task');
    expect(it.va).toBe(init);
    expect(it.str('comm')).toBe('swapper/0');
    const T = k.layout('task_struct', ['pid', 'comm']);
    expect((await k.global('init_task', T)).str('comm')).toBe('swapper/0');
    const mods = await k.global('modules');
    expect(mods.layout.name).toBe('list_head');
    expect(mods.ptr('next')).toBe(mods.va);
    expect(await k.globalValue('page_offset_base')).toBe(BASE);
    expect(await k.globalValue('nr_cpu_ids')).toBe(2);
    const calls = await k.globalArray('sys_call_table');
    expect(calls.va).toBe(sct);
    expect(calls.length).toBe(4); // distance to the next symbol
    expect(calls.ptr(3)).toBe(0xffffffff81000030n);
    expect(() => calls.ptr(4)).toThrow(/out of bounds/);
    k.defineGlobal('init_task_ptr', { type: 'task_struct', shape: 'pointer' });
    expect(await k.globalValue('init_task_ptr')).toBe(init);
    expect((await k.global('init_task_ptr')).va).toBe(init);
    expect(k.hasGlobal('init_task')).toBe(true);
    expect(k.hasGlobal('init_net')).toBe(false); // no symbol
    await expect(k.global('nope')).rejects.toThrow(/not in the globals type table/);
    await expect(k.global('page_offset_base')).rejects.toThrow(/globalValue/);
  });

  it('per-CPU variables via __per_cpu_offset and the .data..percpu DATASEC', async () => {
    const { k, tasks } = setup(5);
    expect(await k.cpuCount()).toBe(2);
    const rq = await k.percpu('runqueues', 1);
    expect(rq.u32('nr_running')).toBe(7);
    expect(rq.ptr('curr')).toBe(tasks[2]);
    expect(await k.percpuValue('current_task', 1)).toBe(tasks[3]);
    await expect(k.percpu('runqueues', 2)).rejects.toThrow(/out of range/);
  });
});
