/** The processes whose fd tables are read: the task walker's processes plus task->files->fdt. */
import { PmiError } from '@pmi/core';
import type { KernelObjects, StructView } from '@pmi/kernel';
import { walkTasks } from '../tasks/index.js';

export interface TaskRef {
  view: StructView;
  pid: number;
  comm: string;
}

export const FD_TASK_FIELDS = ['files.fdt.max_fds', 'files.fdt.fd'] as const;

/** Processes (thread-group leaders) with their fd table; a broken list gives partial results + error. */
export async function fdTasks(k: KernelObjects): Promise<{ tasks: TaskRef[]; error?: PmiError }> {
  const tasks: TaskRef[] = [];
  try {
    for await (const batch of walkTasks(k, { fields: FD_TASK_FIELDS }))
      for (const v of batch) tasks.push({ view: v, pid: v.num('tgid'), comm: v.str('comm') });
  } catch (e) {
    if (e instanceof PmiError) return { tasks, error: e };
    throw e;
  }
  return { tasks };
}
