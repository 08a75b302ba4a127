/**
 * CPUs: one row per possible CPU (`cpu_possible_mask`, below `nr_cpu_ids`) with its per-CPU area
 * (`__per_cpu_offset[cpu]`), whether it is online (`cpu_online_mask`), the task it runs (the per-CPU
 * current task: `current_task`, or `pcpu_hot.current_task` on 6.2–6.14 — whichever the kernel has)
 * and its run queue (`runqueues`: nr_running, curr, idle). Everything per CPU is read in a few
 * batches (run queues, then tasks); names are as /proc shows them (see tasks/proc-comm.ts).
 */
import { isPmiError, PmiError } from '@pmi/core';
import type { KernelObjects, StructView } from '@pmi/kernel';
import { kernelObjects, type KernelLike } from '../tasks/tasks.js';
import { procCommFields, procComms } from '../tasks/proc-comm.js';

export interface CpuRow {
  cpu: number;
  online: boolean;
  /** `__per_cpu_offset[cpu]`, "0x…" (the CPU's GS base in kernel mode on x86-64). */
  per_cpu_offset: string;
  /** The CPU's current task_struct, "0x…"; null when the per-CPU area did not read. */
  current_task: string | null;
  current_pid: number | null;
  /** As /proc shows it; an idle task is `swapper/N`. */
  current_comm: string | null;
  /** The current task is the CPU's idle task (`rq->idle`). */
  idle: boolean | null;
  /** `rq->nr_running`. */
  nr_running: number | null;
  /** `rq->curr`, "0x…" (the scheduler's view; equals current_task except mid context switch). */
  rq_curr: string | null;
  /** `task->stack` of the current task, "0x…" (the bottom of its kernel stack). */
  kernel_stack: string | null;
}

export interface CpuList {
  rows: CpuRow[];
  warnings: string[];
  /** Some CPU's data did not read (its row has nulls). */
  partial: boolean;
  /** Where the current task was found: `current_task` or `pcpu_hot.current_task`. */
  current_source: string;
  nr_cpu_ids: number;
}

const hex = (v: bigint) => '0x' + BigInt.asUintN(64, v).toString(16);

/** One row per possible CPU; per-CPU failures are nulls + a warning (partial), never a throw. */
export async function listCpus(kl: KernelLike): Promise<CpuList> {
  const k: KernelObjects = kernelObjects(kl);
  const warnings: string[] = [];
  let partial = false;
  const nr = await k.nrCpuIds();
  const offsets = await k.cpuOffsets();
  let possible: number[];
  try {
    possible = await k.possibleCpus();
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`${e.message}: listing CPUs 0..${nr - 1} (nr_cpu_ids)`);
    possible = Array.from({ length: nr }, (_, i) => i);
  }
  let online: Set<number> | undefined;
  try {
    online = new Set(await k.onlineCpus());
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(e.message);
  }
  const source = k.currentTaskSource();
  const R = k.layout('rq', ['nr_running', 'curr', 'idle', 'cpu?']);
  const currents: (bigint | PmiError)[] = [];
  const rqs: (StructView | PmiError)[] = [];
  for (const cpu of possible) {
    currents.push(await k.currentTask(cpu).catch((e: unknown) => asError(e)));
    rqs.push(await k.percpu('runqueues', cpu, R).catch((e: unknown) => asError(e)));
  }
  const T = k.layout('task_struct', ['pid', 'comm', 'flags', 'stack', ...procCommFields(k).map((f) => f + '?')]);
  const taskVas = currents.filter((c): c is bigint => typeof c === 'bigint');
  const read = await k.readStructs(taskVas, T);
  const byVa = new Map<bigint, StructView>();
  const good: StructView[] = [];
  read.forEach((v, i) => {
    if (v instanceof PmiError) return;
    byVa.set(taskVas[i], v);
    good.push(v);
  });
  const names = await procComms(k, good, warnings);
  const nameOf = new Map(good.map((v, i) => [v.va, names[i]]));
  const rows: CpuRow[] = possible.map((cpu, i) => {
    const cur = currents[i];
    const rq = rqs[i];
    const row: CpuRow = {
      cpu,
      online: online ? online.has(cpu) : true,
      per_cpu_offset: hex(offsets[cpu]),
      current_task: null,
      current_pid: null,
      current_comm: null,
      idle: null,
      nr_running: null,
      rq_curr: null,
      kernel_stack: null,
    };
    if (cur instanceof PmiError) {
      partial = true;
      warnings.push(`cpu ${cpu}: current task (${source}) not readable: ${cur.message}`);
    } else {
      row.current_task = hex(cur);
      const t = byVa.get(cur);
      if (!t) {
        partial = true;
        const e = read[taskVas.indexOf(cur)];
        warnings.push(
          `cpu ${cpu}: current task ${hex(cur)} not readable${e instanceof PmiError ? `: ${e.message}` : ''}`,
        );
      } else {
        row.current_pid = t.num('pid');
        row.current_comm = nameOf.get(t.va) ?? t.str('comm');
        row.kernel_stack = hex(t.ptr('stack'));
      }
    }
    if (rq instanceof PmiError) {
      partial = true;
      warnings.push(`cpu ${cpu}: run queue not readable: ${rq.message}`);
    } else {
      row.nr_running = rq.num('nr_running');
      row.rq_curr = hex(rq.ptr('curr'));
      if (typeof cur === 'bigint') {
        row.idle = rq.ptr('idle') === cur;
        if (rq.ptr('curr') !== cur)
          warnings.push(
            `cpu ${cpu}: rq->curr ${row.rq_curr} is not the per-CPU current task ${row.current_task} (caught mid context switch?)`,
          );
      }
      if (R.has('cpu') && rq.num('cpu') !== cpu)
        warnings.push(`cpu ${cpu}: its run queue says cpu ${rq.num('cpu')} (per-CPU offset wrong?)`);
    }
    return row;
  });
  return { rows, warnings, partial, current_source: source, nr_cpu_ids: nr };
}

function asError(e: unknown): PmiError {
  if (e instanceof PmiError) return e;
  throw e;
}
