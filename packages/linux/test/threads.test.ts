/**
 * Threads and /proc names on synthetic kernels shaped like the real ones:
 * - `6.7+`: threads only on `signal->thread_head` (no `thread_group`), the kthread behind
 *   `task->worker_private`, kthread full names, worker ids rebuilt (WORKER_ID_LEN enumerator);
 * - `5.10`: both thread lists, the kthread behind `task->set_child_tid`, no full names, worker ids
 *   = task->comm;
 * - `thread_group only`: a kernel without `signal->thread_head` (the ring through the leader).
 */
import { describe, expect, it } from 'vitest';
import {
  CountingMemory,
  KernelObjects,
  SymbolTableBuilder,
  X86Paging,
  parseBtf,
  KernelScratchMemory,
} from '@pmi/kernel';
import { BtfBuilder } from '../../kernel/test/fixtures/btf/builder.js';
import { listTasks, PF_KTHREAD, PF_WQ_WORKER } from '../src/index.js';

type Flavour = '6.7+' | '5.10' | 'thread_group only';

const OFF = {
  state: 0,
  flags: 4,
  tasks: 8,
  pid: 24,
  tgid: 28,
  comm: 32,
  thread_node: 48,
  thread_group: 64,
  exit_state: 80,
  start_time: 88,
  real_parent: 96,
  cred: 104,
  mm: 112,
  signal: 120,
  kthread: 128,
  stack: 136,
};
const TASK_SIZE = 144;

function buildBtf(f: Flavour) {
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  const uint = b.int('unsigned int', 4);
  const ulong = b.int('long unsigned int', 8);
  const u64 = b.int('long long unsigned int', 8);
  const char = b.int('char', 1, { char: true });
  const voidp = b.ptr(0);
  const charp = b.ptr(char);
  const list_head = b.nextId;
  b.struct('list_head', 16, [
    { name: 'next', type: list_head + 1, bits: 0 },
    { name: 'prev', type: list_head + 1, bits: 64 },
  ]);
  b.ptr(list_head);
  const cred = b.struct('cred', 16, [
    { name: 'usage', type: int, bits: 0 },
    { name: 'uid', type: uint, bits: 32 },
    { name: 'gid', type: uint, bits: 64 },
  ]);
  const mm = b.struct('mm_struct', 40, [
    { name: 'pgd', type: ulong, bits: 0 },
    { name: 'arg_start', type: ulong, bits: 64 },
    { name: 'arg_end', type: ulong, bits: 128 },
    { name: 'env_start', type: ulong, bits: 192 },
    { name: 'env_end', type: ulong, bits: 256 },
  ]);
  const signal = b.struct('signal_struct', 24, [
    { name: 'nr_threads', type: int, bits: 0 },
    ...(f === 'thread_group only' ? [] : [{ name: 'thread_head', type: list_head, bits: 64 }]),
  ]);
  const comm = b.array(char, int, 16);
  const task = b.nextId;
  b.struct('task_struct', TASK_SIZE, [
    { name: '__state', type: uint, bits: OFF.state * 8 },
    { name: 'flags', type: uint, bits: OFF.flags * 8 },
    { name: 'tasks', type: list_head, bits: OFF.tasks * 8 },
    { name: 'pid', type: int, bits: OFF.pid * 8 },
    { name: 'tgid', type: int, bits: OFF.tgid * 8 },
    { name: 'comm', type: comm, bits: OFF.comm * 8 },
    ...(f === 'thread_group only' ? [] : [{ name: 'thread_node', type: list_head, bits: OFF.thread_node * 8 }]),
    ...(f === '6.7+' ? [] : [{ name: 'thread_group', type: list_head, bits: OFF.thread_group * 8 }]),
    { name: 'exit_state', type: int, bits: OFF.exit_state * 8 },
    { name: 'start_time', type: u64, bits: OFF.start_time * 8 },
    { name: 'real_parent', type: task + 1, bits: OFF.real_parent * 8 },
    { name: 'cred', type: task + 2, bits: OFF.cred * 8 },
    { name: 'mm', type: task + 3, bits: OFF.mm * 8 },
    { name: 'signal', type: task + 4, bits: OFF.signal * 8 },
    { name: f === '6.7+' ? 'worker_private' : 'set_child_tid', type: voidp, bits: OFF.kthread * 8 },
    { name: 'stack', type: voidp, bits: OFF.stack * 8 },
  ]);
  b.ptr(task);
  b.ptr(cred);
  b.ptr(mm);
  b.ptr(signal);
  b.struct('kthread', 16, [
    { name: 'data', type: voidp, bits: 0 },
    ...(f === '6.7+' ? [{ name: 'full_name', type: charp, bits: 64 }] : []),
  ]);
  const wqName = b.struct('workqueue_struct', 24, [{ name: 'name', type: b.array(char, int, 24), bits: 0 }]);
  const attrs = b.struct('workqueue_attrs', 4, [{ name: 'nice', type: int, bits: 0 }]);
  const pool = b.struct('worker_pool', 16, [
    { name: 'cpu', type: int, bits: 0 },
    { name: 'id', type: int, bits: 32 },
    { name: 'attrs', type: b.ptr(attrs), bits: 64 },
  ]);
  b.struct('worker', 56, [
    { name: 'current_work', type: voidp, bits: 0 },
    { name: 'pool', type: b.ptr(pool), bits: 64 },
    { name: 'desc', type: b.array(char, int, 24), bits: 128 },
    { name: 'id', type: int, bits: 320 },
    { name: 'rescue_wq', type: b.ptr(wqName), bits: 384 },
  ]);
  if (f === '6.7+')
    b.enum('wq_internal_consts', 4, [
      ['WQ_NAME_LEN', 32],
      ['WORKER_ID_LEN', 42],
    ]);
  return parseBtf(b.build());
}

class Mem extends KernelScratchMemory {}

/** Circular list through `member` of the given nodes (a head list_head first). */
function ring(m: Mem, nodes: bigint[]): void {
  for (let i = 0; i < nodes.length; i++) {
    m.u64(nodes[i], nodes[(i + 1) % nodes.length]);
    m.u64(nodes[i] + 8n, nodes[(i + nodes.length - 1) % nodes.length]);
  }
}

interface Spec {
  pid: number;
  comm: string;
  flags?: number;
  threads?: { tid: number; comm: string }[];
  worker?: {
    desc: string;
    busy?: boolean;
    pool?: { cpu: number; id: number; nice: number };
    id: number;
    rescue?: string;
  };
  fullName?: string;
}

const PROCS: Spec[] = [
  { pid: 1, comm: 'init' },
  {
    pid: 2,
    comm: 'pmi-threads',
    threads: [
      { tid: 20, comm: 'pmi-worker-1' },
      { tid: 21, comm: 'pmi-worker-2' },
      { tid: 22, comm: 'pmi-worker-3' },
    ],
  },
  {
    pid: 3,
    comm: 'kworker/0:1',
    flags: PF_KTHREAD | PF_WQ_WORKER,
    worker: { desc: 'events', id: 1, pool: { cpu: 0, id: 0, nice: 0 } },
  },
  {
    pid: 4,
    comm: 'kworker/0:0H',
    flags: PF_KTHREAD | PF_WQ_WORKER,
    worker: { desc: 'kblockd', busy: true, id: 0, pool: { cpu: 0, id: 1, nice: -20 } },
  },
  {
    pid: 5,
    comm: 'kworker/R-quota',
    flags: PF_KTHREAD | PF_WQ_WORKER,
    worker: { desc: '', id: 0, rescue: 'quota_events_unbound' },
  },
  { pid: 6, comm: 'irq/24-virtio0-', flags: PF_KTHREAD, fullName: 'irq/24-virtio0-config' },
  { pid: 7, comm: 'kthreadd', flags: PF_KTHREAD },
];

function kernel(f: Flavour, opts: { cycleIn?: number } = {}) {
  const btf = buildBtf(f);
  const m = new Mem();
  const cred = m.alloc(16);
  const task = (pid: number, tgid: number, comm: string, flags: number, signal: bigint, parent: bigint) => {
    const va = m.alloc(TASK_SIZE);
    m.u32(va + BigInt(OFF.pid), pid);
    m.u32(va + BigInt(OFF.tgid), tgid);
    m.u32(va + BigInt(OFF.flags), flags);
    m.u32(va + BigInt(OFF.state), 1);
    m.str(va + BigInt(OFF.comm), comm, 16);
    m.u64(va + BigInt(OFF.cred), cred);
    m.u64(va + BigInt(OFF.signal), signal);
    m.u64(va + BigInt(OFF.real_parent), parent);
    return va;
  };
  const sig0 = m.alloc(24);
  const init = task(0, 0, 'swapper/0', PF_KTHREAD, sig0, 0n);
  m.u64(init + BigInt(OFF.real_parent), init);
  const leaders: bigint[] = [];
  for (const p of PROCS) {
    const sig = m.alloc(24);
    const lead = task(p.pid, p.pid, p.comm, p.flags ?? 0, sig, init);
    leaders.push(lead);
    const all = [lead, ...(p.threads ?? []).map((t) => task(t.tid, p.pid, t.comm, 0, sig, init))];
    m.u32(sig, all.length);
    if (f !== 'thread_group only') ring(m, [sig + 8n, ...all.map((t) => t + BigInt(OFF.thread_node))]);
    if (f !== '6.7+')
      ring(
        m,
        all.map((t) => t + BigInt(OFF.thread_group)),
      );
    if (opts.cycleIn === p.pid && all.length > 2) {
      // the last thread links back to the second (a cycle not through the head)
      const member = f === 'thread_group only' ? OFF.thread_group : OFF.thread_node;
      m.u64(all[all.length - 1] + BigInt(member), all[1] + BigInt(member));
    }
    if ((p.flags ?? 0) & PF_KTHREAD) {
      const kt = m.alloc(16);
      m.u64(lead + BigInt(OFF.kthread), kt);
      if (p.fullName && f === '6.7+') {
        const s = m.alloc(32);
        m.str(s, p.fullName, 32);
        m.u64(kt + 8n, s);
      }
      if (p.worker) {
        const w = m.alloc(56);
        m.u64(kt, w);
        if (p.worker.busy) m.u64(w, 0xffff888000dead00n);
        m.str(w + 16n, p.worker.desc, 24);
        m.u32(w + 40n, p.worker.id);
        if (p.worker.pool) {
          const pool = m.alloc(16);
          const attrs = m.alloc(4);
          m.u32(attrs, p.worker.pool.nice);
          m.u32(pool, p.worker.pool.cpu);
          m.u32(pool + 4n, p.worker.pool.id);
          m.u64(pool + 8n, attrs);
          m.u64(w + 8n, pool);
        }
        if (p.worker.rescue) {
          const wq = m.alloc(24);
          m.str(wq, p.worker.rescue, 24);
          m.u64(w + 48n, wq);
        }
      }
    }
  }
  ring(m, [init + BigInt(OFF.tasks), ...leaders.map((t) => t + BigInt(OFF.tasks))]);
  const sb = new SymbolTableBuilder();
  sb.add('init_task', 'D', init);
  const paging = new X86Paging(new CountingMemory(m.pt.memory()), m.pt.dtb, 4);
  return new KernelObjects({ paging, btf, symbols: sb.build() });
}

const TIDS = [
  [1, 1],
  [2, 2],
  [20, 2],
  [21, 2],
  [22, 2],
  [3, 3],
  [4, 4],
  [5, 5],
  [6, 6],
  [7, 7],
];

describe.each(['6.7+', '5.10', 'thread_group only'] as const)('threads and /proc names, %s', (f) => {
  it('ps --threads: every thread of every process, leader first', async () => {
    const r = await listTasks(kernel(f), { threads: true, cmdline: false });
    expect(r.partial).toBe(false);
    expect(r.warnings).toEqual([]);
    expect(r.rows.map((x) => [x.pid, x.tgid])).toEqual(TIDS);
    expect(r.rows.filter((x) => x.tgid === 2).map((x) => x.comm)).toEqual([
      'pmi-threads',
      'pmi-worker-1',
      'pmi-worker-2',
      'pmi-worker-3',
    ]);
    const procs = await listTasks(kernel(f), { cmdline: false });
    expect(procs.rows.map((x) => x.pid)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(procs.rows.find((x) => x.pid === 2)?.threads).toBe(4);
  });

  it('comm as /proc shows it, task_comm as stored', async () => {
    const r = await listTasks(kernel(f), { cmdline: false });
    const by = new Map(r.rows.map((x) => [x.pid, x]));
    const rebuilt = f === '6.7+';
    expect(by.get(3)?.comm).toBe('kworker/0:1-events');
    expect(by.get(4)?.comm).toBe('kworker/0:0H+kblockd');
    expect(by.get(5)?.comm).toBe(rebuilt ? 'kworker/R-quota_events_unbound' : 'kworker/R-quota');
    expect(by.get(6)?.comm).toBe(rebuilt ? 'irq/24-virtio0-config' : 'irq/24-virtio0-');
    expect(by.get(7)?.comm).toBe('kthreadd');
    expect(by.get(1)?.comm).toBe('init');
    expect(r.rows.map((x) => x.task_comm)).toEqual(PROCS.map((p) => p.comm));
    const raw = await listTasks(kernel(f), { cmdline: false, procComm: false });
    expect(raw.rows.map((x) => x.comm)).toEqual(PROCS.map((p) => p.comm));
  });

  it('a thread list with a cycle: bounded, the threads read so far, a warning (partial)', async () => {
    const r = await listTasks(kernel(f, { cycleIn: 2 }), { threads: true, cmdline: false });
    expect(r.partial).toBe(true);
    expect(r.warnings.join(' ')).toMatch(/thread list cut short: pid 2 .*seen twice/);
    expect(r.rows.map((x) => x.pid)).toEqual([1, 2, 20, 21, 22, 3, 4, 5, 6, 7]);
  });
});
