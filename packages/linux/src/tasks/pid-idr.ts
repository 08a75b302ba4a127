/**
 * The pid IDR of a pid namespace (`ns->idr`, default `init_pid_ns`): pid number → `struct pid *`,
 * and through each pid's `tasks[PIDTYPE_PID]` hlist the task that has that pid. This is the view
 * `find_task_by_vpid()` and /proc/<pid> use; it is independent of the task list (`init_task.tasks`),
 * which makes it one of the cross-views of the integrity monitor.
 *
 * The IDR is an XArray (4.20+: `struct idr { struct radix_tree_root idr_rt; ... }` and
 * `radix_tree_root` is `struct xarray`). It is walked by its node layout from BTF, never from
 * constants: `XA_CHUNK_SHIFT` is log2 of the length of `xa_node.slots`; entry encodings are the
 * XArray ABI (xarray.h, unchanged since 4.20): an internal entry has bits 1:0 = 10, it is a node
 * when above 4096 (`xa_is_node`), a sibling below 256, retry/zero at 256/257; bit 0 set is a value
 * entry; anything else non-NULL is a pointer (a `struct pid *`).
 *
 * Bounded: at most `maxNodes` nodes, depth ≤ 64 / XA_CHUNK_SHIFT + 1, every node seen once. A node
 * that does not read, whose `shift` is not its parent's minus XA_CHUNK_SHIFT, or whose `offset` is
 * not its slot (a node being freed on a live target, or corruption) is skipped with a warning and
 * the result is partial. A `struct pid` whose level-0 number is not its IDR index is skipped with
 * a warning (a pid freed and reused between reads).
 */
import { PmiError, isPmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';

/** One IDR entry: the index (pid number in the namespace) and the `struct pid` it holds. */
export interface PidIdrEntry {
  nr: number;
  /** `struct pid *` */
  pid: bigint;
}

/** A task reachable through the IDR: its pid number, `struct pid` and `task_struct`. */
export interface PidTask {
  nr: number;
  pid: bigint;
  task: bigint;
}

export interface PidIdrWalk {
  entries: PidIdrEntry[];
  warnings: string[];
  /** Some node or entry could not be read or did not validate: entries may be missing. */
  partial: boolean;
  /** xa_node objects read. */
  nodes: number;
  /** XA_CHUNK_SHIFT of this kernel (log2 of xa_node.slots' length). */
  chunkShift: number;
}

export interface PidIdrTasks {
  tasks: PidTask[];
  /** IDR entries (struct pids), with or without a task of type PID. */
  pids: number;
  warnings: string[];
  partial: boolean;
  nodes: number;
}

export interface PidIdrOptions {
  /** `struct pid_namespace *` (default `&init_pid_ns`). */
  ns?: bigint;
  /** Most xa_node objects to read (default 200,000: pid_max is at most 4M = 65,536 leaves of 64). */
  maxNodes?: number;
  /** Most tasks on one pid's PIDTYPE_PID list (there is one; default 16). */
  maxTasksPerPid?: number;
  signal?: AbortSignal;
}

const ORIGIN = 'linux/pid-idr';
const hex = (v: bigint) => '0x' + BigInt.asUintN(64, v).toString(16);

/** XA_CHUNK_SHIFT from the length of xa_node.slots (64 → 6; CONFIG_BASE_SMALL 16 → 4). */
export function xaChunkShift(k: KernelObjects): number {
  const N = k.layout('xa_node', ['shift', 'offset', 'parent', 'slots']);
  const f = N.field('slots');
  const n = f.nelems;
  if (!Number.isInteger(n) || n < 2 || (n & (n - 1)) !== 0)
    throw new PmiError('E_NOT_FOUND', ORIGIN, `xa_node.slots has ${n} elements: not a power of two`, {
      struct: 'xa_node',
      field: 'slots',
    });
  return 31 - Math.clz32(n);
}

/** Classify one XArray slot value (see the file comment). */
export function xaEntryKind(e: bigint): 'null' | 'node' | 'sibling' | 'retry' | 'internal' | 'value' | 'pointer' {
  if (e === 0n) return 'null';
  if ((e & 3n) === 2n) {
    if (e > 4096n) return 'node';
    if (e < 256n * 4n + 2n) return 'sibling'; // xa_mk_sibling(offset) = (offset << 2) | 2, offset < 256
    if (e === (256n << 2n) + 2n || e === (257n << 2n) + 2n) return 'retry';
    return 'internal';
  }
  if ((e & 1n) === 1n) return 'value';
  return 'pointer';
}

/** Every `struct pid *` in a pid namespace's IDR with its index (see the file comment). */
export async function walkPidIdr(k: KernelObjects, opts: PidIdrOptions = {}): Promise<PidIdrWalk> {
  const warnings: string[] = [];
  let partial = false;
  if (!k.hasField('pid_namespace', 'idr.idr_rt.xa_head'))
    throw new PmiError(
      'E_NOT_FOUND',
      ORIGIN,
      'pid_namespace.idr is not an XArray (no idr.idr_rt.xa_head: a kernel before 4.20)',
      { struct: 'pid_namespace', field: 'idr.idr_rt.xa_head' },
    );
  const chunkShift = xaChunkShift(k);
  const slotsPerNode = 1 << chunkShift;
  const maxDepth = Math.ceil(64 / chunkShift) + 1;
  const maxNodes = opts.maxNodes ?? 200_000;
  const nsVa = opts.ns ?? k.symbol('init_pid_ns');
  const headVa = nsVa + BigInt(k.btf.fieldOffset('pid_namespace', 'idr.idr_rt.xa_head'));
  const head = await k.readPointer(headVa);
  const N = k.layout('xa_node', ['shift', 'offset', 'parent', 'slots']);
  const entries: PidIdrEntry[] = [];
  const kind = xaEntryKind(head);
  if (kind === 'pointer') return { entries: [{ nr: 0, pid: head }], warnings, partial, nodes: 0, chunkShift };
  if (kind !== 'node') return { entries, warnings, partial, nodes: 0, chunkShift };
  interface Pending {
    node: bigint;
    parent: bigint;
    /** Expected shift (undefined for the root) and slot in the parent. */
    shift?: number;
    slot: number;
    base: bigint;
  }
  let level: Pending[] = [{ node: head - 2n, parent: 0n, slot: 0, base: 0n }];
  const seen = new Set<bigint>([head - 2n]);
  let nodes = 0;
  for (let depth = 0; level.length > 0; depth++) {
    opts.signal?.throwIfAborted();
    if (depth >= maxDepth) {
      warnings.push(
        `pid IDR: deeper than ${maxDepth} levels (a cycle through nodes?); ${level.length} node(s) left out`,
      );
      partial = true;
      break;
    }
    if (nodes + level.length > maxNodes) {
      warnings.push(`pid IDR: more than ${maxNodes} nodes; stopped (limit)`);
      partial = true;
      level = level.slice(0, Math.max(0, maxNodes - nodes));
      if (level.length === 0) break;
    }
    nodes += level.length;
    const views = await k.readStructs(
      level.map((p) => p.node),
      N,
    );
    const next: Pending[] = [];
    for (let i = 0; i < views.length; i++) {
      const p = level[i];
      const v = views[i];
      if (isPmiError(v)) {
        warnings.push(`pid IDR: node ${hex(p.node)} (index ${p.base}…) is unreadable: ${v.message}`);
        partial = true;
        continue;
      }
      const shift = v.num('shift');
      const bad =
        p.shift === undefined
          ? shift % chunkShift !== 0 || shift >= 64
          : shift !== p.shift || v.num('offset') !== p.slot || v.ptr('parent') !== p.parent;
      if (bad) {
        warnings.push(
          `pid IDR: node ${hex(p.node)} does not fit its place (shift ${shift}, offset ${v.num('offset')}, parent ${hex(v.ptr('parent'))}; expected ${p.shift === undefined ? `a multiple of ${chunkShift}` : `shift ${p.shift}, offset ${p.slot}, parent ${hex(p.parent)}`}): skipped`,
        );
        partial = true;
        continue;
      }
      for (let s = 0; s < slotsPerNode; s++) {
        const e = BigInt.asUintN(64, BigInt(v.array('slots', s)));
        const ek = xaEntryKind(e);
        const index = p.base + (BigInt(s) << BigInt(shift));
        if (ek === 'node') {
          if (shift === 0) {
            warnings.push(`pid IDR: leaf node ${hex(p.node)} slot ${s} holds a node entry: ignored`);
            partial = true;
            continue;
          }
          const child = e - 2n;
          if (seen.has(child)) {
            warnings.push(`pid IDR: node ${hex(child)} reached twice (a cycle): ignored`);
            partial = true;
            continue;
          }
          seen.add(child);
          next.push({ node: child, parent: p.node, shift: shift - chunkShift, slot: s, base: index });
        } else if (ek === 'pointer') {
          if (index > 0x7fffffffn) {
            warnings.push(`pid IDR: an entry at index ${index} (beyond any pid): ignored`);
            partial = true;
            continue;
          }
          entries.push({ nr: Number(index), pid: e });
        }
      }
    }
    level = next;
  }
  entries.sort((a, b) => a.nr - b.nr);
  return { entries, warnings, partial, nodes, chunkShift };
}

/** Layout of the struct pid fields the task view reads (pid type PIDTYPE_PID's list head). */
function pidLayout(k: KernelObjects, pidType: number): Layout {
  return k.layout('pid', ['level', 'numbers[0].nr', 'numbers[0].ns', `tasks[${pidType}].first`]);
}

/**
 * Every task the pid IDR reaches: for each `struct pid`, the tasks on `pid->tasks[PIDTYPE_PID]`
 * (linked through `task->pid_links[PIDTYPE_PID]`; one per pid). A pid whose level-0 number is not
 * its index, or whose namespace is not `ns`, is skipped with a warning. Never throws for bad memory
 * (warnings + partial); throws E_NOT_FOUND when this kernel has no XArray IDR or no `pid_links`.
 */
export async function pidIdrTasks(k: KernelObjects, opts: PidIdrOptions = {}): Promise<PidIdrTasks> {
  const pidType = Number(k.btf.enumValue('pid_type', 'PIDTYPE_PID'));
  if (!k.hasField('task_struct', 'pid_links'))
    throw new PmiError('E_NOT_FOUND', ORIGIN, 'task_struct has no pid_links (a kernel before 4.19)', {
      struct: 'task_struct',
      field: 'pid_links',
    });
  const nsVa = opts.ns ?? k.symbol('init_pid_ns');
  const walk = await walkPidIdr(k, { ...opts, ns: nsVa });
  const warnings = [...walk.warnings];
  let partial = walk.partial;
  const P = pidLayout(k, pidType);
  const FIRST = P.field(`tasks[${pidType}].first`);
  const NR = P.field('numbers[0].nr');
  const NS = P.field('numbers[0].ns');
  const linkOff = BigInt(k.btf.fieldOffset('task_struct', `pid_links[${pidType}]`));
  const nextOff = BigInt(k.btf.fieldOffset('hlist_node', 'next'));
  const maxPer = opts.maxTasksPerPid ?? 16;
  const views = await k.readStructs(
    walk.entries.map((e) => e.pid),
    P,
  );
  const tasks: PidTask[] = [];
  const more: { e: PidIdrEntry; node: bigint }[] = [];
  views.forEach((v: StructView | PmiError, i) => {
    const e = walk.entries[i];
    if (isPmiError(v)) {
      warnings.push(`pid ${e.nr}: struct pid at ${hex(e.pid)} is unreadable: ${v.message}`);
      partial = true;
      return;
    }
    if (v.num(NR) !== e.nr || v.ptr(NS) !== nsVa) {
      warnings.push(
        `pid ${e.nr}: struct pid at ${hex(e.pid)} says nr ${v.num(NR)} in namespace ${hex(v.ptr(NS))} (freed and reused?): skipped`,
      );
      partial = true;
      return;
    }
    const first = v.ptr(FIRST);
    if (first === 0n) return; // a pgid/sid whose leader is gone, or a pid being set up
    tasks.push({ nr: e.nr, pid: e.pid, task: first - linkOff });
    more.push({ e, node: first });
  });
  // The PID list holds one task; anything after it is followed, bounded, to report it too.
  let frontier = more;
  for (let hop = 1; frontier.length > 0; hop++) {
    const ops = frontier.map((f) => ({ va: f.node + nextOff, buf: new Uint8Array(8) }));
    const failed = new Map((await k.paging.readVirtualBatch(ops)).map((x) => [x.index, x.error]));
    const next: typeof frontier = [];
    frontier.forEach((f, i) => {
      const err = failed.get(i);
      if (err) {
        warnings.push(`pid ${f.e.nr}: its task list link at ${hex(f.node)} is unreadable: ${err.message}`);
        partial = true;
        return;
      }
      const n = new DataView(ops[i].buf.buffer).getBigUint64(0, true);
      if (n === 0n) return;
      if (hop >= maxPer) {
        warnings.push(`pid ${f.e.nr}: more than ${maxPer} tasks on its PIDTYPE_PID list: cut short`);
        partial = true;
        return;
      }
      tasks.push({ nr: f.e.nr, pid: f.e.pid, task: n - linkOff });
      next.push({ e: f.e, node: n });
    });
    frontier = next;
  }
  return { tasks, pids: walk.entries.length, warnings, partial, nodes: walk.nodes };
}
