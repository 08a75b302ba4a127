/**
 * Batched walk of the process list for remote sources.
 *
 * A linked list costs one round trip per node when its links are chased one by one. The global
 * pid IDR (`init_pid_ns.idr`, an XArray) is a tree: it is read breadth-first (one batch per level),
 * giving every `struct pid`; `pid->tasks[PIDTYPE_TGID].first` is the thread-group leader (linked
 * through `task->pid_links[PIDTYPE_TGID]`), and one readStructs reads all leaders. The IDR only
 * says *where* to read: the walk of `init_task.tasks` stays authoritative (same order, same bounds
 * and E_LIST errors as walkList) — it follows each object's own `tasks.next` and reads any node
 * the IDR did not give (one round trip each).
 */
import { isPmiError, PmiError } from '@pmi/core';
import { E_LIST, type KernelObjects, type Layout, type StructView, type WalkOptions } from '@pmi/kernel';

const MAX_IDR_NODES = 100_000;

const hex = (v: bigint) => '0x' + BigInt.asUintN(64, v).toString(16);

/** Task objects of every thread-group leader the pid IDR knows, by `&task->tasks` (see above). */
export async function prefetchLeaders(k: KernelObjects, T: Layout): Promise<Map<bigint, StructView>> {
  const cache = new Map<bigint, StructView>();
  const tgid = Number(k.btf.enumValue('pid_type', 'PIDTYPE_TGID'));
  const NS = k.layout('pid_namespace', ['idr.idr_rt.xa_head']);
  const ns = await k.read(k.symbol('init_pid_ns'), NS);
  const N = k.layout('xa_node', ['shift', 'slots']);
  const isNode = (e: bigint) => (e & 3n) === 2n && e > 4096n;
  const pids: bigint[] = [];
  const headEntry = ns.ptr('idr.idr_rt.xa_head');
  let level: bigint[] = [];
  if (isNode(headEntry)) level.push(headEntry - 2n);
  else if (headEntry !== 0n && (headEntry & 3n) === 0n) pids.push(headEntry);
  let seen = 0;
  for (let depth = 0; level.length > 0 && depth < 16; depth++) {
    if ((seen += level.length) > MAX_IDR_NODES) break;
    const views = await k.readStructs(level, N);
    const next: bigint[] = [];
    for (const v of views) {
      if (v instanceof PmiError) continue;
      const n = v.length('slots');
      for (let i = 0; i < n; i++) {
        const e = BigInt.asUintN(64, BigInt(v.array('slots', i)));
        if (e === 0n) continue;
        if (isNode(e)) next.push(e - 2n);
        else if ((e & 3n) === 0n) pids.push(e);
      }
    }
    level = next;
  }
  if (pids.length === 0) return cache;
  // pid->tasks[PIDTYPE_TGID].first → the leader's pid_links[PIDTYPE_TGID]
  const P = k.layout('pid', ['tasks']);
  const hlistHead = k.btf.sizeOf('hlist_head');
  const firstOps = pids.map((p) => ({
    va: p + BigInt(P.offsetOf('tasks') + tgid * hlistHead),
    buf: new Uint8Array(8),
  }));
  const bad = new Set((await k.paging.readVirtualBatch(firstOps)).map((f) => f.index));
  const linkOff = BigInt(k.btf.fieldOffset('task_struct', 'pid_links') + tgid * k.btf.sizeOf('hlist_node'));
  const nodeOff = BigInt(T.offsetOf('tasks'));
  const leaders: bigint[] = [];
  firstOps.forEach((op, i) => {
    if (bad.has(i)) return;
    const first = new DataView(op.buf.buffer).getBigUint64(0, true);
    if (first !== 0n) leaders.push(first - linkOff);
  });
  const views = await k.readStructs(leaders, T);
  views.forEach((v, i) => {
    if (!(v instanceof PmiError)) cache.set(leaders[i] + nodeOff, v);
  });
  return cache;
}

function listError(
  reason: string,
  list: string,
  at: bigint,
  after: bigint | undefined,
  count: number,
  cause?: unknown,
) {
  const what =
    reason === 'cycle'
      ? `node ${hex(at)} seen twice (a cycle not through the head)`
      : reason === 'unreadable'
        ? `node ${hex(at)} is unreadable${cause instanceof Error ? ` (${cause.message})` : ''}`
        : reason === 'too_long'
          ? `more than ${count} nodes (limit reached)`
          : 'NULL link';
  return new PmiError(
    E_LIST as never,
    'linux/tasks',
    `${list}: ${what} after ${count} item(s)${after !== undefined ? `, reached from ${hex(after)}` : ''}`,
    { list, reason, at: hex(at), ...(after !== undefined ? { after: hex(after) } : {}), count },
    cause,
  );
}

/**
 * walkList of `init_task.tasks` (T must declare `tasks` and `tasks.next`) taking objects from
 * `cache` (by node address) when present. Same semantics as walkList: yields objects in list
 * order, then throws one E_LIST error {list, reason, at, after, count} if the list is broken.
 */
export async function* walkPrefetched(
  k: KernelObjects,
  head: bigint,
  T: Layout,
  cache: Map<bigint, StructView>,
  opts: WalkOptions = {},
): AsyncGenerator<StructView, void> {
  const max = opts.max ?? 1_000_000;
  const name = opts.name ?? 'init_task.tasks';
  const memberOff = BigInt(T.offsetOf('tasks'));
  const nextOff = BigInt(k.btf.fieldOffset('list_head', 'next'));
  const NEXT = T.field('tasks.next');
  let node: bigint;
  try {
    node = await k.readPointer(head + nextOff);
  } catch (e) {
    throw listError('unreadable', name, head, undefined, 0, e);
  }
  const seen = new Set<bigint>();
  let prev = head;
  let count = 0;
  for (;;) {
    if (node === head) return;
    if (node === 0n) throw listError('null_link', name, 0n, prev, count);
    if (count >= max) throw listError('too_long', name, node, prev, max);
    if (seen.has(node)) throw listError('cycle', name, node, prev, count);
    seen.add(node);
    if ((count & 1023) === 0) opts.signal?.throwIfAborted();
    let v = cache.get(node);
    if (!v) {
      const [r] = await k.readStructs([node - memberOff], T);
      if (isPmiError(r)) throw listError('unreadable', name, node, prev, count, r);
      v = r;
    }
    yield v;
    count++;
    prev = node;
    node = v.ptr(NEXT);
  }
}
