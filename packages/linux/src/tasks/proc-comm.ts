/**
 * Task names as /proc shows them (`/proc/PID/comm`, `/proc/PID/task/TID/comm`, ps):
 * fs/proc/array.c proc_task_name() —
 *
 * - a workqueue worker (PF_WQ_WORKER): `wq_worker_comm()` (kernel/workqueue.c): its id, then `+desc` while
 *   it runs a work item or `-desc` after one (desc = the workqueue's name, or what set_worker_desc()
 *   wrote), e.g. `kworker/0:1-events`. The id is `task->comm` up to 6.9; from 6.10 (`format_worker_id()`)
 *   it is rebuilt untruncated: `kworker/R-<wq>` for a rescuer, `kworker/<cpu>:<id>[H|F]` for a per-CPU
 *   pool (H: nice < 0, F: the RT pool of kernels that have one), `kworker/u<pool>:<id>` for an unbound
 *   pool, `kworker/dying` without a pool;
 * - another kernel thread: its full name (`kthread->full_name`, 5.17+, set when the name does not fit
 *   the 16 bytes of task->comm), else task->comm;
 * - anything else: task->comm.
 *
 * The worker is `kthread_data(task)` = `to_kthread(task)->data`, the kthread struct being
 * `task->worker_private` (5.17+) or `task->set_child_tid` (before). Which variant applies is read
 * from the kernel itself (BTF members, the `format_worker_id` symbol or the `WORKER_ID_LEN`
 * enumerator that came with it), never from its version. /proc formats into 64 bytes: at most 63
 * characters.
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';

/** PF_WQ_WORKER (include/linux/sched.h; stable since 2.6.36). */
export const PF_WQ_WORKER = 0x00000020;
/** PF_KTHREAD. */
const PF_KTHREAD_FLAG = 0x00200000;
/** proc_task_name()'s buffer: `char tcomm[64]`. */
export const PROC_COMM_MAX = 63;

/** What wq_worker_comm() reads of a worker. */
export interface WorkerInfo {
  /** worker->desc ('' when never set). */
  desc: string;
  /** worker->current_work != NULL. */
  busy: boolean;
  /** worker->pool != NULL. */
  hasPool: boolean;
  /** worker->id. */
  id: number;
  /** worker->rescue_wq->name when the worker is a rescuer. */
  rescueWq?: string;
  /** pool->cpu (-1 for unbound pools), pool->id, pool->attrs->nice. */
  poolCpu?: number;
  poolId?: number;
  nice?: number;
}

export interface WqCommStyle {
  /** The kernel rebuilds the worker id (format_worker_id, 6.10+) instead of using task->comm. */
  formatId: boolean;
  /** RTPRI_LEVEL when the kernel has an RT pool (suffix F), else undefined. */
  rtNice?: number;
}

/** format_worker_id() of 6.10+. */
export function formatWorkerId(w: WorkerInfo, style: WqCommStyle): string {
  if (w.rescueWq !== undefined) return `kworker/R-${w.rescueWq}`;
  if (!w.hasPool) return 'kworker/dying';
  if ((w.poolCpu ?? -1) >= 0) {
    const nice = w.nice ?? 0;
    const suffix = nice < 0 ? (style.rtNice !== undefined && nice === style.rtNice ? 'F' : 'H') : '';
    return `kworker/${w.poolCpu}:${w.id}${suffix}`;
  }
  return `kworker/u${w.poolId ?? 0}:${w.id}`;
}

/** wq_worker_comm(): the name /proc shows for a PF_WQ_WORKER task. */
export function wqWorkerComm(taskComm: string, w: WorkerInfo, style: WqCommStyle): string {
  let s = style.formatId ? formatWorkerId(w, style) : taskComm;
  if (w.hasPool && w.desc !== '') s += (w.busy ? '+' : '-') + w.desc;
  return s.slice(0, PROC_COMM_MAX);
}

/** proc_task_name() from what was read. */
export function procTaskName(
  taskComm: string,
  flags: number,
  extra: { worker?: WorkerInfo; fullName?: string; style: WqCommStyle },
): string {
  if (flags & PF_WQ_WORKER) return extra.worker ? wqWorkerComm(taskComm, extra.worker, extra.style) : taskComm;
  if (flags & PF_KTHREAD_FLAG && extra.fullName) return extra.fullName.slice(0, PROC_COMM_MAX);
  return taskComm;
}

/** How this kernel builds the names (feature detection, cached per KernelObjects). */
interface ProcCommPlan {
  /** task_struct member holding the kthread pointer. */
  kthreadField?: 'worker_private' | 'set_child_tid';
  K?: Layout;
  W?: Layout;
  style: WqCommStyle;
  /** Why kworker names cannot be built (missing types), once per kernel. */
  unavailable?: string;
}

const plans = new WeakMap<KernelObjects, ProcCommPlan>();

function plan(k: KernelObjects): ProcCommPlan {
  let p = plans.get(k);
  if (p) return p;
  const rt = k.btf.enumerator('RTPRI_LEVEL');
  const style: WqCommStyle = {
    formatId: k.symbols.get('format_worker_id') !== undefined || k.btf.enumerator('WORKER_ID_LEN') !== undefined,
    rtNice: rt === undefined ? undefined : Number(rt.value),
  };
  p = { style };
  try {
    p.kthreadField = k.hasField('task_struct', 'worker_private') ? 'worker_private' : 'set_child_tid';
    p.K = k.layout('kthread', ['data', 'full_name?']);
    p.W = k.layout('worker', [
      'desc',
      'current_work',
      'pool',
      'id',
      'rescue_wq',
      'rescue_wq.name',
      'pool.cpu',
      'pool.id',
      'pool.attrs',
      'pool.attrs.nice',
    ]);
  } catch (e) {
    p.unavailable = e instanceof Error ? e.message : String(e);
  }
  plans.set(k, p);
  return p;
}

/** The task_struct fields procComms needs (add them to the task layout). */
export function procCommFields(k: KernelObjects): string[] {
  return [k.hasField('task_struct', 'worker_private') ? 'worker_private' : 'set_child_tid'];
}

/**
 * Names as /proc shows them for task views (which must carry `comm`, `flags` and the field of
 * procCommFields). Kernel threads cost one batched read of their kthread structs, workers one of
 * their worker structs (+ pool, attrs, rescue_wq), full names one batch: three batches per call
 * however many tasks. A task whose extra data does not read keeps task->comm (and a warning).
 */
export async function procComms(
  k: KernelObjects,
  views: readonly StructView[],
  warnings?: { push(message: string): unknown },
): Promise<string[]> {
  const T = views[0]?.layout;
  if (!T) return [];
  const COMM = T.field('comm');
  const FLAGS = T.field('flags');
  const comms = views.map((t) => t.str(COMM));
  const flags = views.map((t) => t.num(FLAGS));
  const kthreads: number[] = [];
  views.forEach((_t, i) => {
    if (flags[i] & PF_KTHREAD_FLAG) kthreads.push(i);
  });
  if (kthreads.length === 0) return comms;
  const p = plan(k);
  if (p.unavailable || !p.K || !p.W || !p.kthreadField || !T.has(p.kthreadField)) {
    if (kthreads.some((i) => flags[i] & PF_WQ_WORKER))
      warnings?.push(`kworker names as task->comm only: ${p.unavailable ?? `task layout without '${p.kthreadField}'`}`);
    return comms;
  }
  const KF = T.field(p.kthreadField);
  const kptr = kthreads.map((i) => views[i].ptr(KF));
  const withK = kthreads.filter((_i, j) => kptr[j] !== 0n);
  const kvas = kptr.filter((v) => v !== 0n);
  const kviews = await k.readStructs(kvas, p.K);
  const failed: string[] = [];
  // workers
  const workerOf: number[] = [];
  const workerVas: bigint[] = [];
  const fullOf: number[] = [];
  const fullVas: bigint[] = [];
  const hasFull = p.K.has('full_name');
  kviews.forEach((kv, j) => {
    const i = withK[j];
    if (kv instanceof PmiError) {
      failed.push(`pid ${views[i].num('pid')}: ${kv.message}`);
      return;
    }
    if (flags[i] & PF_WQ_WORKER) {
      const data = kv.ptr('data');
      if (data !== 0n) {
        workerOf.push(i);
        workerVas.push(data);
      }
    } else if (hasFull && !kv.isNull('full_name')) {
      fullOf.push(i);
      fullVas.push(kv.ptr('full_name'));
    }
  });
  const [wviews, names] = await Promise.all([k.readStructs(workerVas, p.W), readCStrings(k, fullVas, PROC_COMM_MAX)]);
  wviews.forEach((wv, j) => {
    const i = workerOf[j];
    if (wv instanceof PmiError) {
      failed.push(`pid ${views[i].num('pid')}: ${wv.message}`);
      return;
    }
    const hasPool = !wv.isNull('pool');
    const info: WorkerInfo = {
      desc: wv.str('desc'),
      busy: !wv.isNull('current_work'),
      hasPool,
      id: wv.num('id'),
      rescueWq: wv.isNull('rescue_wq') || !wv.reached('rescue_wq.name') ? undefined : wv.str('rescue_wq.name'),
      poolCpu: hasPool && wv.reached('pool.cpu') ? wv.num('pool.cpu') : undefined,
      poolId: hasPool && wv.reached('pool.id') ? wv.num('pool.id') : undefined,
      nice: hasPool && wv.reached('pool.attrs.nice') ? wv.num('pool.attrs.nice') : undefined,
    };
    comms[i] = wqWorkerComm(comms[i], info, p.style);
  });
  names.forEach((n, j) => {
    if (n instanceof PmiError) failed.push(`pid ${views[fullOf[j]].num('pid')}: kthread full_name: ${n.message}`);
    else if (n !== '') comms[fullOf[j]] = n;
  });
  if (failed.length)
    warnings?.push(
      `${failed.length} kernel thread name(s) as task->comm (kthread/worker not readable): ${failed.slice(0, 3).join('; ')}`,
    );
  return comms;
}

/** NUL-terminated strings of at most `max` bytes, one batch (a string running into the next page reads on). */
async function readCStrings(k: KernelObjects, vas: readonly bigint[], max: number): Promise<(string | PmiError)[]> {
  if (vas.length === 0) return [];
  const ops = vas.map((va) => {
    const inPage = 4096 - Number(BigInt.asUintN(64, va) & 0xfffn);
    return { va, buf: new Uint8Array(Math.min(max + 1, inPage)) };
  });
  const bad = new Map<number, PmiError>();
  for (const f of await k.paging.readVirtualBatch(ops)) bad.set(f.index, f.error);
  return Promise.all(
    ops.map(async (op, i) => {
      const e = bad.get(i);
      if (e) return e;
      const nul = op.buf.indexOf(0);
      if (nul >= 0) return Buffer.from(op.buf.subarray(0, nul)).toString('utf8');
      if (op.buf.length > max) return Buffer.from(op.buf.subarray(0, max)).toString('utf8');
      try {
        return await k.readString(op.va, max);
      } catch (x) {
        return x instanceof PmiError ? x : new PmiError('E_INTERNAL', 'linux/tasks', String(x));
      }
    }),
  );
}
