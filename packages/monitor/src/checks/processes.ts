/**
 * hidden_processes: three views of the kernel's tasks, compared.
 *
 * (a) the task list: `init_task.tasks` (thread-group leaders) and each leader's thread list
 *     (`signal->thread_head` or `thread_group`, whichever BTF says the kernel has) — what
 *     for_each_process/ps see, and what a rootkit unlinks from;
 * (b) the pid IDR of `init_pid_ns` (every pid of every namespace is also a pid there): each
 *     `struct pid`'s `tasks[PIDTYPE_PID]` gives its task (see @pmi/linux pid-idr.ts);
 * (c) the CPUs: each possible CPU's run queue `curr`, its per-CPU current task, and the CFS tasks
 *     queued on it (`rq->cfs_tasks`, where struct rq has it).
 *
 * A task that (b) or (c) reaches and (a) does not is hidden: tampering, severity high. Not hidden:
 * `init_task` (the list head) and the idle tasks (`rq->idle`, swapper/N; never on the list by
 * design). Races on a live target: the kernel links a new task into the lists before it attaches
 * it to its pid (copy_process, under tasklist_lock) and detaches the pid before unlinking
 * (__unhash_process), so a consistent picture never has a task in (b) only; but the views are read
 * one after the other. So every candidate is confirmed by a second read of all three views: only a
 * task that is again reached by (b)/(c), at the same address with the same pid, and again absent
 * from (a), counts. A task that is exiting (exit_state set or PF_EXITING) is never tampering: seen
 * only on a CPU it is nothing (a self-reaping task runs its last instructions after release_task
 * unlinked it); seen in the pid IDR it is a warning. When the task list itself was cut short (a
 * broken list), candidates it may have missed are warnings, not tampering. Each list (the task
 * list, the IDR, each CPU's CFS queue) caught mid-update — a cycle or a freed node on a live
 * target — is re-read up to three times before it is reported broken (`settled`).
 */
import { isPmiError, PmiError } from '@pmi/core';
import type { KernelObjects, StructView } from '@pmi/kernel';
import { pidIdrTasks, PF_KTHREAD, walkTasks } from '@pmi/linux';
import { vaHex, type Finding } from '../model.js';
import type { Check, CheckContext, CheckOutcome } from './types.js';

export const HIDDEN_PROCESSES = 'hidden_processes';

/** PF_EXITING (include/linux/sched.h; stable since 2.6). */
export const PF_EXITING = 0x00000004;

/** Where a task was seen, besides the task list. */
export type TaskView = 'pid_idr' | 'rq_curr' | 'cpu_current' | 'cfs_queue';

/** A task some view reached that the task list does not have (before judging). */
export interface TaskSighting {
  /** task_struct address, "0x…" (16 digits). */
  task: string;
  pid: number;
  tgid: number;
  comm: string;
  kthread: boolean;
  exiting: boolean;
  /** Views that reached it (with the CPU for the CPU views: `rq_curr:1`). */
  views: string[];
  /** The task list was cut short where this task would be (its process list or its leader's thread list). */
  listIncomplete?: boolean;
}

export interface HiddenTasksVerdict {
  findings: Finding[];
  /** Candidates of the first read not confirmed by the second (a fork/exit in between). */
  raced: number;
}

const VIEW_TEXT: Record<TaskView, string> = {
  pid_idr: 'the pid IDR',
  rq_curr: 'run queue curr',
  cpu_current: 'per-CPU current task',
  cfs_queue: 'CFS run queue',
};

function viewsText(views: readonly string[]): string {
  return views
    .map((v) => {
      const [name, cpu] = v.split(':');
      const t = VIEW_TEXT[name as TaskView] ?? name;
      return cpu === undefined ? t : `${t} of cpu ${cpu}`;
    })
    .join(', ');
}

/**
 * The decision, a pure function of the candidates of two reads (the second confirms): tampering for
 * a confirmed, live, fully-listed-around task; a warning for an exiting task in the pid IDR or a
 * task the broken list may have hidden by accident; nothing otherwise (see the file comment).
 */
export function judgeHiddenTasks(first: readonly TaskSighting[], second: readonly TaskSighting[]): HiddenTasksVerdict {
  const again = new Map(second.map((s) => [`${s.task}/${s.pid}`, s]));
  const findings: Finding[] = [];
  let raced = 0;
  for (const a of first) {
    const b = again.get(`${a.task}/${a.pid}`);
    if (!b) {
      raced++;
      continue;
    }
    const views = [...new Set([...a.views, ...b.views])];
    const who = `${a.pid === a.tgid ? `pid ${a.pid}` : `thread ${a.pid} of pid ${a.tgid}`} (${b.comm}) task ${a.task}`;
    const inIdr = views.includes('pid_idr');
    const base = {
      check: HIDDEN_PROCESSES,
      address: a.task,
      symbol: null,
      key: `hidden_task:${a.pid}:${a.task}`,
    };
    if (a.exiting || b.exiting) {
      if (inIdr)
        findings.push({
          ...base,
          kind: 'warning',
          severity: 'low',
          evidence: `${who} is exiting and seen by ${viewsText(views)} but not in the task list: not judged`,
        });
      continue;
    }
    if (a.listIncomplete || b.listIncomplete) {
      findings.push({
        ...base,
        kind: 'warning',
        severity: 'medium',
        evidence: `${who} is seen by ${viewsText(views)} but not in the task list, which was cut short (broken list): cannot tell hidden from missed`,
      });
      continue;
    }
    findings.push({
      ...base,
      kind: 'tampering',
      severity: 'high',
      evidence: `${who}${a.kthread ? ' [kernel thread]' : ''} is seen by ${viewsText(views)} but is not in the task list (init_task.tasks and thread lists), on two reads`,
    });
  }
  return { findings, raced };
}

// ---------------------------------------------------------------------------- reading the views

interface ViewsRead {
  candidates: TaskSighting[];
  /** Unlisted tasks whose pid is not the IDR index that reached them, by `task/nr` → message. */
  mismatches: Map<string, string>;
  warnings: string[];
  partial: boolean;
  counts: { listed: number; idr: number; cpus: number; queued: number; idle: number };
}

const hex = (v: bigint) => vaHex(v);

/**
 * Run a read until it is complete, at most `tries` times: on a live target a list can be caught
 * mid-update (a cycle, a freed node), which a re-read a moment later does not see. A broken
 * structure in a snapshot (or corrupted memory) fails every time and is reported.
 */
export async function settled<T extends { partial: boolean }>(read: () => Promise<T>, tries = 3): Promise<T> {
  let r = await read();
  for (let i = 1; i < tries && r.partial; i++) r = await read();
  return r;
}

interface Listed {
  listed: Set<bigint>;
  warnings: string[];
  partial: boolean;
  processListBroken: boolean;
  brokenGroups: Set<number>;
}

/** (a) the task list, threads included (and init_task, its head). */
async function readTaskList(k: KernelObjects, signal?: AbortSignal): Promise<Listed> {
  const r: Listed = {
    listed: new Set([k.symbol('init_task')]),
    warnings: [],
    partial: false,
    processListBroken: false,
    brokenGroups: new Set(),
  };
  try {
    for await (const chunk of walkTasks(k, {
      threads: true,
      signal,
      onThreadListError: (e, leader) => {
        r.warnings.push(`thread list of pid ${leader.num('pid')} cut short: ${e.message}`);
        r.brokenGroups.add(leader.num('tgid'));
        r.partial = true;
      },
    }))
      for (const t of chunk) r.listed.add(t.va);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    r.warnings.push(`task list cut short: ${e.message}`);
    r.processListBroken = true;
    r.partial = true;
  }
  return r;
}

/** The three views once; the candidates are the tasks (b)/(c) reach and (a) does not. */
async function readViews(k: KernelObjects, signal?: AbortSignal): Promise<ViewsRead> {
  const warnings: string[] = [];
  let partial = false;
  // (a)
  const list = await settled(() => readTaskList(k, signal));
  warnings.push(...list.warnings);
  partial ||= list.partial;
  const listed = list.listed;
  // (b) the pid IDR
  const seen = new Map<bigint, { views: Set<string>; nr?: number }>();
  const see = (task: bigint, view: string, nr?: number) => {
    let s = seen.get(task);
    if (!s) seen.set(task, (s = { views: new Set(), nr }));
    s.views.add(view);
    if (nr !== undefined) s.nr = nr;
  };
  let idr = 0;
  try {
    const r = await settled(() => pidIdrTasks(k, { signal }));
    idr = r.tasks.length;
    warnings.push(...r.warnings);
    if (r.partial) partial = true;
    for (const t of r.tasks) see(t.task, 'pid_idr', t.nr);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`pid IDR not read: ${e.message}`);
    partial = true;
  }
  // (c) the CPUs
  const idle = new Set<bigint>();
  let cpus = 0;
  let queued = 0;
  try {
    let possible: number[];
    try {
      possible = await k.possibleCpus();
    } catch {
      possible = Array.from({ length: await k.nrCpuIds() }, (_, i) => i);
    }
    const cfs = k.hasField('rq', 'cfs_tasks') && k.hasField('task_struct', 'se.group_node');
    const R = k.layout('rq', ['curr', 'idle', ...(cfs ? ['cfs_tasks'] : [])]);
    const Q = k.layout('task_struct', ['se.group_node']);
    for (const cpu of possible) {
      signal?.throwIfAborted();
      let rq: StructView;
      try {
        rq = await k.percpu('runqueues', cpu, R);
      } catch (e) {
        if (!isPmiError(e)) throw e;
        warnings.push(`cpu ${cpu}: run queue not readable: ${e.message}`);
        partial = true;
        continue;
      }
      cpus++;
      idle.add(rq.ptr('idle'));
      if (!rq.isNull('curr')) see(rq.ptr('curr'), `rq_curr:${cpu}`);
      try {
        const cur = await k.currentTask(cpu);
        if (cur !== 0n) see(cur, `cpu_current:${cpu}`);
      } catch (e) {
        if (!isPmiError(e)) throw e;
        warnings.push(`cpu ${cpu}: current task not readable: ${e.message}`);
        partial = true;
      }
      if (cfs) {
        const head = rq.addressOf('cfs_tasks');
        const r = await settled(async () => {
          const x = await k.collectList(head, Q, 'se.group_node', {
            max: 100_000,
            signal,
            name: `cpu ${cpu} rq->cfs_tasks`,
          });
          return { ...x, partial: x.error !== undefined };
        });
        for (const t of r.items) see(t.va, `cfs_queue:${cpu}`);
        queued += r.items.length;
        if (r.error) {
          warnings.push(`cpu ${cpu}: CFS task queue cut short: ${r.error.message}`);
          partial = true;
        }
      }
    }
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`run queues not read: ${e.message}`);
    partial = true;
  }
  // the candidates: reached by (b)/(c), not in (a), not an idle task
  const cand = [...seen.entries()].filter(([va]) => !listed.has(va) && !idle.has(va));
  const candidates: TaskSighting[] = [];
  const mismatches = new Map<string, string>();
  if (cand.length > 0) {
    const T = k.layout('task_struct', ['pid', 'tgid', 'comm', 'flags', 'exit_state']);
    const views = await k.readStructs(
      cand.map(([va]) => va),
      T,
    );
    views.forEach((v, i) => {
      const [va, s] = cand[i];
      const where = [...s.views];
      if (v instanceof PmiError) {
        mismatches.set(
          `${hex(va)}/unreadable`,
          `task ${hex(va)} seen by ${viewsText(where)} does not read: ${v.message}`,
        );
        return;
      }
      const pid = v.num('pid');
      const flags = v.num('flags');
      if (s.nr !== undefined && s.nr !== pid) {
        mismatches.set(
          `${hex(va)}/${s.nr}/${pid}`,
          `task ${hex(va)} reached through pid ${s.nr} in the pid IDR says pid ${pid}, and is not in the task list: not judged`,
        );
        return;
      }
      if (pid === 0 && (flags & PF_KTHREAD) !== 0 && s.views.has('pid_idr') === false) return; // an idle task
      const tgid = v.num('tgid');
      candidates.push({
        task: hex(va),
        pid,
        tgid,
        comm: v.str('comm'),
        kthread: (flags & PF_KTHREAD) !== 0,
        exiting: v.num('exit_state') !== 0 || (flags & PF_EXITING) !== 0,
        views: where,
        listIncomplete: list.processListBroken || list.brokenGroups.has(tgid),
      });
    });
  }
  return {
    candidates,
    mismatches,
    warnings,
    partial,
    counts: { listed: listed.size, idr, cpus, queued, idle: idle.size },
  };
}

/** The state a pass leaves for the baseline (counts and the hidden pids; nothing is compared with it). */
export interface HiddenProcessesState {
  listed: number;
  pid_idr: number;
  cpus: number;
  /** Tasks queued on the CPUs' CFS run queues (rq->cfs_tasks), where the kernel has that list. */
  cfs_queued: number;
  /** Candidates of the first read that the second did not confirm (fork/exit in between). */
  raced: number;
  hidden: { pid: number; task: string }[];
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const t0 = performance.now();
  const k = ctx.k;
  const first = await readViews(k, ctx.signal);
  const warnings = [...first.warnings];
  let partial = first.partial;
  let verdict: HiddenTasksVerdict = { findings: [], raced: 0 };
  if (first.candidates.length > 0 || first.mismatches.size > 0) {
    // confirm on a second read of every view (a fork or exit in between clears a candidate)
    const second = await readViews(k, ctx.signal);
    for (const w of second.warnings) if (!warnings.includes(w)) warnings.push(w);
    partial ||= second.partial;
    verdict = judgeHiddenTasks(first.candidates, second.candidates);
    // an unlisted task that does not read, or whose pid is not the one the IDR reached it by, twice
    for (const [key, message] of first.mismatches)
      if (second.mismatches.has(key)) {
        warnings.push(message);
        partial = true;
      }
  }
  const state: HiddenProcessesState = {
    listed: first.counts.listed,
    pid_idr: first.counts.idr,
    cpus: first.counts.cpus,
    cfs_queued: first.counts.queued,
    raced: verdict.raced,
    hidden: verdict.findings
      .filter((f) => f.kind === 'tampering')
      .map((f) => ({ pid: Number(f.key.split(':')[1]), task: f.address! })),
  };
  return {
    check: HIDDEN_PROCESSES,
    findings: verdict.findings,
    warnings,
    partial,
    ms: Math.round((performance.now() - t0) * 10) / 10,
    state,
  };
}

/** hidden_processes as a Check (see the file comment). */
export const hiddenProcessesCheck: Check = {
  id: HIDDEN_PROCESSES,
  title: 'Hidden processes: the task list vs the pid IDR and the CPUs’ run queues',
  light: false,
  run: (ctx) => run(ctx),
};
