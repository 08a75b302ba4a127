/**
 * Processes and threads from the kernel's task list.
 *
 * Processes: `init_task.tasks` links every thread-group leader (init_task itself, pid 0, is the
 * head and not listed — like ps). Threads: each leader's `signal->thread_head` list, linked
 * through `task->thread_node` (3.14+; the only thread list from 6.7, when `thread_group` went away),
 * else — a kernel without it — the leader's `thread_group` ring (the leader is part of it). Which
 * one is decided by the task_struct/signal_struct members BTF has. Every walk is bounded
 * (cycle/length/unreadable → partial rows and an E_LIST error). Names (`comm`) are as /proc shows
 * them (kworkers with their workqueue, kernel threads' full names: proc-comm.ts); `task_comm` is
 * the raw task->comm. Objects are read in chunks with one batched readStructs (plus one batch per
 * pointer level: real_parent, cred, mm, signal); command lines of a whole chunk are read through
 * each process's own page tables in one concurrent round.
 */
import { isPmiError, PmiError } from '@pmi/core';
import { KernelObjects, type Layout, type StructView, type X86Paging } from '@pmi/kernel';
import { nulSeparated, ProcessSpaces, readProcessBatch, type ProcessRead } from '../memory/process-memory.js';
import { findBootTime, type BootTime } from './boottime.js';
import { taskStateLetter } from './state.js';
import { prefetchLeaders, walkPrefetched } from './prefetch.js';
import { procComms } from './proc-comm.js';

/** PF_KTHREAD (include/linux/sched.h; stable since 2.6). */
export const PF_KTHREAD = 0x00200000;

/** One process (thread-group leader) or, with `threads`, one thread. */
export interface TaskRow {
  /** Process id (tgid) — the thread id for thread rows. */
  pid: number;
  /** Thread-group id (= pid for processes and group leaders). */
  tgid: number;
  /** real_parent->tgid. */
  ppid: number;
  uid: number;
  gid: number;
  /** The name as /proc/PID/comm shows it (kworker/0:1-events; a kernel thread's full name). */
  comm: string;
  /** task->comm as stored (16 bytes, NUL included). */
  task_comm: string;
  /** argv joined by spaces, from mm->arg_start..arg_end in the process's memory; '' without mm. */
  cmdline: string;
  kthread: boolean;
  /** ps letter: R S D T t X Z P I. */
  state: string;
  /** Seconds since boot (start_boottime, else start_time), ms precision. */
  start_time: number;
  /** signal->nr_threads. */
  threads: number;
  /** task_struct address, "0x…". */
  task: string;
}

export interface ListTasksOptions {
  /** See WalkTasksOptions.prefetch. */
  prefetch?: boolean;
  /** One row per thread instead of per process. */
  threads?: boolean;
  /** Read command lines (default true). */
  cmdline?: boolean;
  /** Names as /proc shows them (kworker workqueues, kthread full names; default true), else task->comm. */
  procComm?: boolean;
  /** Most bytes of a command line (default 128 KiB). */
  cmdlineMax?: number;
  /** Most tasks in the process list (default 1,000,000) and threads per process (default 100,000). */
  max?: number;
  maxThreads?: number;
  /** Tasks per batched read (default 512). */
  chunk?: number;
  signal?: AbortSignal;
}

export interface TaskList {
  rows: TaskRow[];
  warnings: string[];
  /** A broken list was cut short (E_LIST) or a chunk did not read: rows are partial. */
  partial: boolean;
  /** First list error, if any. */
  error?: PmiError;
  /** Boot instant when the timekeeper was found (wall clock of start_time = boot + start_time). */
  bootTime?: BootTime;
}

const objectsCache = new WeakMap<object, KernelObjects>();

/** KernelObjects for a KernelObjects or a discoverKernel() result (cached per discovered kernel). */
export function kernelObjects(
  k: KernelObjects | { paging: X86Paging; btf?: KernelObjects['btf']; symbols: KernelObjects['symbols'] },
): KernelObjects {
  if (k instanceof KernelObjects) return k;
  let o = objectsCache.get(k);
  if (!o) {
    o = KernelObjects.from(k);
    objectsCache.set(k, o);
  }
  return o;
}

export type KernelLike = Parameters<typeof kernelObjects>[0];

const BASE_FIELDS = [
  'pid',
  'tgid',
  'comm',
  'tasks',
  'tasks.next',
  'thread_node?',
  'thread_group?',
  'worker_private?',
  'set_child_tid?',
  'flags',
  '__state?',
  'state?',
  'exit_state',
  'start_boottime?',
  'start_time',
  'real_parent',
  'real_parent.tgid',
  'cred.uid',
  'cred.gid',
  'mm',
  'mm.pgd',
  'mm.arg_start',
  'mm.arg_end',
  'mm.env_start',
  'mm.env_end',
  'signal',
  'signal.nr_threads',
  'signal.thread_head?',
];

/**
 * The task_struct layout the task views read; `extra` adds fields (e.g. `files` for open files):
 * views from {@link walkTasks} carry them.
 */
export function taskLayout(k: KernelObjects, extra: readonly string[] = []): Layout {
  return k.layout('task_struct', extra.length ? [...BASE_FIELDS, ...extra] : BASE_FIELDS);
}

/** `&init_task.tasks`: the head of the process list. */
export function taskListHead(k: KernelObjects, T: Layout = taskLayout(k)): bigint {
  return k.symbol('init_task') + BigInt(T.offsetOf('tasks'));
}

export interface WalkTasksOptions {
  threads?: boolean;
  max?: number;
  maxThreads?: number;
  chunk?: number;
  signal?: AbortSignal;
  /** Extra task_struct fields to read (see taskLayout). */
  fields?: readonly string[];
  /**
   * Read the leaders found in the pid IDR in a few batches, then walk the list through them, instead
   * of one round trip per task (see prefetch.ts). Default: on sources without synchronous reads.
   */
  prefetch?: boolean;
  /** Called for each broken thread list (the walk goes on with the next process). */
  onThreadListError?: (e: PmiError, leader: StructView) => void;
}

/**
 * Task objects (StructView of {@link taskLayout}), processes in list order — with `threads`, each
 * process's threads (leader first as the kernel links it). Yields what it read, then throws the
 * process list's E_LIST error if the list is broken. Chunks of `chunk` views are yielded together.
 */
export async function* walkTasks(kl: KernelLike, opts: WalkTasksOptions = {}): AsyncGenerator<StructView[], void> {
  const k = kernelObjects(kl);
  const T = taskLayout(k, opts.fields);
  const chunk = Math.max(1, opts.chunk ?? 512);
  const threadList = opts.threads ? threadListOf(T) : undefined;
  let batch: StructView[] = [];
  const walkOpts = { max: opts.max, chunk, signal: opts.signal, name: 'init_task.tasks' };
  let cache: Map<bigint, StructView> | undefined;
  if (opts.prefetch ?? k.paging.mem.readSync === undefined) {
    try {
      cache = await prefetchLeaders(k, T);
    } catch {
      cache = undefined; // no IDR (or unreadable): chase the links one by one
    }
  }
  const walk = cache
    ? walkPrefetched(k, taskListHead(k, T), T, cache, walkOpts)
    : k.walkList(taskListHead(k, T), T, 'tasks', walkOpts);
  let failure: unknown;
  try {
    for await (const t of walk) {
      if (!opts.threads) {
        batch.push(t);
      } else if (threadList === 'thread_head') {
        if (!t.reached('signal.thread_head')) {
          batch.push(t); // no signal_struct (should not happen): the leader alone
        } else {
          const r = await k.collectList(t.addressOf('signal.thread_head'), T, 'thread_node', {
            max: opts.maxThreads ?? 100_000,
            chunk,
            signal: opts.signal,
            name: `pid ${t.num('pid')} signal.thread_head`,
          });
          if (r.items.length === 0) batch.push(t);
          else batch.push(...r.items);
          if (r.error) opts.onThreadListError?.(r.error, t);
        }
      } else {
        // the thread_group ring: the leader is a member, so the walk from it yields the others
        batch.push(t);
        const r = await k.collectList(t.addressOf('thread_group'), T, 'thread_group', {
          max: opts.maxThreads ?? 100_000,
          chunk,
          signal: opts.signal,
          name: `pid ${t.num('pid')} thread_group`,
        });
        batch.push(...r.items);
        if (r.error) opts.onThreadListError?.(r.error, t);
      }
      if (batch.length >= chunk) {
        yield batch;
        batch = [];
      }
    }
  } catch (e) {
    failure = e; // yield what was read, then rethrow
  }
  if (batch.length) yield batch;
  if (failure !== undefined) throw failure;
}

/**
 * How threads are linked in this kernel: `signal->thread_head` + `task->thread_node` (3.14+, the
 * only list from 6.7) or the `thread_group` ring (before 3.14; also in kernels that have both).
 */
export function threadListOf(T: Layout): 'thread_head' | 'thread_group' {
  if (T.has('signal.thread_head') && T.has('thread_node')) return 'thread_head';
  if (T.has('thread_group')) return 'thread_group';
  throw new PmiError(
    'E_NOT_FOUND',
    'linux/tasks',
    'no thread list in this kernel: task_struct has neither thread_node (+ signal_struct.thread_head) nor thread_group',
    { struct: 'task_struct', tried: ['signal.thread_head + thread_node', 'thread_group'] },
  );
}

function hex(v: bigint): string {
  return '0x' + BigInt.asUintN(64, v).toString(16);
}

/** Turn task views into rows; command lines of the batch are read together. */
export async function taskRows(
  k: KernelObjects,
  views: readonly StructView[],
  spaces: ProcessSpaces,
  opts: {
    cmdline?: boolean;
    cmdlineMax?: number;
    procComm?: boolean;
    warnings?: { push(message: string): unknown };
  } = {},
): Promise<TaskRow[]> {
  const T = views[0]?.layout;
  if (!T) return [];
  const F = {
    pid: T.field('pid'),
    tgid: T.field('tgid'),
    comm: T.field('comm'),
    flags: T.field('flags'),
    state: T.has('__state') ? T.field('__state') : T.field('state'),
    exit: T.field('exit_state'),
    start: T.has('start_boottime') ? T.field('start_boottime') : T.field('start_time'),
    ppid: T.field('real_parent.tgid'),
    uid: T.field('cred.uid'),
    gid: T.field('cred.gid'),
    mm: T.field('mm'),
    pgd: T.field('mm.pgd'),
    argStart: T.field('mm.arg_start'),
    argEnd: T.field('mm.arg_end'),
    nrThreads: T.field('signal.nr_threads'),
  };
  const names = opts.procComm === false ? undefined : await procComms(k, views, opts.warnings);
  const rows: TaskRow[] = views.map((t, i) => {
    const flags = t.num(F.flags);
    const start = BigInt(t.int(F.start));
    const taskComm = t.str(F.comm);
    return {
      pid: t.num(F.pid),
      tgid: t.num(F.tgid),
      ppid: t.reached(F.ppid) ? t.num(F.ppid) : 0,
      uid: t.reached(F.uid) ? t.u32(F.uid) : -1,
      gid: t.reached(F.gid) ? t.u32(F.gid) : -1,
      comm: names ? names[i] : taskComm,
      task_comm: taskComm,
      cmdline: '',
      kthread: (flags & PF_KTHREAD) !== 0,
      state: taskStateLetter(t.num(F.state), t.num(F.exit)),
      start_time: Number(start / 1_000_000n) / 1000,
      threads: t.reached(F.nrThreads) ? t.num(F.nrThreads) : 0,
      task: hex(t.va),
    };
  });
  if (opts.cmdline === false) return rows;
  // One read per distinct (mm) — threads share it.
  const max = opts.cmdlineMax ?? 128 << 10;
  const want: { row: number; mm: bigint; pgd: bigint; start: bigint; len: number }[] = [];
  views.forEach((t, i) => {
    if (rows[i].kthread || t.isNull(F.mm) || !t.reached(F.pgd)) return;
    const start = t.ptr(F.argStart);
    const end = t.ptr(F.argEnd);
    if (end <= start) return;
    const len = Number(end - start > BigInt(max) ? BigInt(max) : end - start);
    want.push({ row: i, mm: t.ptr(F.mm), pgd: t.ptr(F.pgd), start, len });
  });
  if (want.length === 0) return rows;
  const mmIndex = new Map<bigint, number>();
  const uniq: typeof want = [];
  for (const w of want) {
    if (!mmIndex.has(w.mm)) {
      mmIndex.set(w.mm, uniq.length);
      uniq.push(w);
    }
  }
  const spacesOf = await spaces.forPgds(uniq.map((w) => w.pgd));
  const reads: ProcessRead[] = [];
  const readOf = new Map<number, number>();
  uniq.forEach((w, i) => {
    const s = spacesOf[i];
    if (s instanceof PmiError) {
      opts.warnings?.push(`pid ${rows[w.row].pid}: ${s.message}`);
      return;
    }
    readOf.set(i, reads.length);
    reads.push({ space: s, va: w.start, len: w.len });
  });
  const results = await readProcessBatch(reads);
  for (const w of want) {
    const u = mmIndex.get(w.mm)!;
    const r = readOf.get(u);
    if (r === undefined) continue;
    rows[w.row].cmdline = nulSeparated(results[r].bytes).join(' ');
  }
  for (const [u, r] of readOf) {
    const res = results[r];
    if (res.error && res.bytes.length === 0) {
      opts.warnings?.push(`pid ${rows[uniq[u].row].pid}: command line not readable (${res.error.message})`);
    }
  }
  return rows;
}

/**
 * Rows of all processes (or threads), in task-list order, as an async iterable of chunks.
 * Ends by throwing the E_LIST error of a broken process list (after yielding what was read).
 */
export async function* iterateTasks(
  kl: KernelLike,
  opts: ListTasksOptions & { onWarning?: (message: string, partial: boolean) => void } = {},
): AsyncGenerator<TaskRow[], void> {
  const k = kernelObjects(kl);
  const spaces = new ProcessSpaces(k);
  const warn = opts.onWarning ?? (() => {});
  const warnings = { push: (m: string) => warn(m, false) };
  for await (const views of walkTasks(k, {
    ...opts,
    onThreadListError: (e) => warn(`thread list cut short: ${e.message}`, true),
  })) {
    yield await taskRows(k, views, spaces, { ...opts, warnings });
  }
}

/** All processes (or threads): rows, warnings, partial flag; never throws for broken lists. */
export async function listTasks(kl: KernelLike, opts: ListTasksOptions = {}): Promise<TaskList> {
  const k = kernelObjects(kl);
  const warnings: string[] = [];
  const rows: TaskRow[] = [];
  let error: PmiError | undefined;
  let partial = false;
  const onWarning = (m: string, p: boolean) => {
    warnings.push(m);
    if (p) partial = true;
  };
  try {
    for await (const chunk of iterateTasks(k, { ...opts, onWarning })) rows.push(...chunk);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    error = e;
    partial = true;
    warnings.push(`process list cut short: ${e.message}`);
  }
  let bootTime: BootTime | undefined;
  try {
    bootTime = await findBootTime(k);
  } catch {
    bootTime = undefined;
  }
  return { rows, warnings, partial, error, bootTime };
}

/**
 * The task of a pid: the thread-group leader whose tgid is `pid`, else (a thread id) the thread.
 * Throws E_NOT_FOUND; a broken process list that hides the pid throws its E_LIST error.
 */
export async function findTask(
  kl: KernelLike,
  pid: number,
  opts: { fields?: readonly string[] } = {},
): Promise<StructView> {
  const k = kernelObjects(kl);
  let listError: unknown;
  for (const threads of [false, true]) {
    try {
      for await (const views of walkTasks(k, { threads, fields: opts.fields })) {
        const hit = views.find((v) => (threads ? v.num('pid') : v.num('tgid')) === pid);
        if (hit) return hit;
      }
    } catch (e) {
      listError ??= e;
    }
  }
  if (listError) throw listError;
  throw new PmiError('E_NOT_FOUND', 'linux/tasks', `no process or thread with pid ${pid}`, { pid });
}

/** The address space of a task (its mm->pgd), or E_NOT_FOUND for kernel threads / zombies. */
export async function taskAddressSpace(kl: KernelLike, task: StructView, spaces?: ProcessSpaces): Promise<X86Paging> {
  const k = kernelObjects(kl);
  if (task.isNull('mm') || !task.reached('mm.pgd')) {
    throw new PmiError(
      'E_NOT_FOUND',
      'linux/tasks',
      `pid ${task.num('pid')} has no user address space (kernel thread or exited)`,
      {
        pid: task.num('pid'),
      },
    );
  }
  const [s] = await (spaces ?? new ProcessSpaces(k)).forPgds([task.ptr('mm.pgd')]);
  if (s instanceof PmiError) throw s;
  return s;
}

/** Read [va, va+len) of a process, all or nothing (E_PAGE_FAULT names the first unmapped VA). */
export async function readProcessMemory(kl: KernelLike, pid: number, va: bigint, len: number): Promise<Uint8Array> {
  const space = await taskAddressSpace(kl, await findTask(kl, pid));
  const [r] = await readProcessBatch([{ space, va, len }]);
  if (r.error) throw r.error;
  return r.bytes;
}

async function mmStrings(
  kl: KernelLike,
  pid: number,
  from: string,
  to: string,
  max: number,
): Promise<{ strings: string[]; task: StructView; error?: PmiError }> {
  const task = await findTask(kl, pid);
  const space = await taskAddressSpace(kl, task);
  const start = task.ptr(from);
  const end = task.ptr(to);
  const len = end > start ? Number(end - start > BigInt(max) ? BigInt(max) : end - start) : 0;
  const [r] = await readProcessBatch([{ space, va: start, len }]);
  return { strings: nulSeparated(r.bytes), task, ...(r.error ? { error: r.error } : {}) };
}

/** argv of a process (mm->arg_start..arg_end); `error` when a page did not read (argv truncated). */
export function processArgs(kl: KernelLike, pid: number, max = 1 << 20) {
  return mmStrings(kl, pid, 'mm.arg_start', 'mm.arg_end', max);
}

/** Environment of a process (mm->env_start..env_end), "NAME=value" strings. */
export function processEnv(kl: KernelLike, pid: number, max = 1 << 20) {
  return mmStrings(kl, pid, 'mm.env_start', 'mm.env_end', max);
}
