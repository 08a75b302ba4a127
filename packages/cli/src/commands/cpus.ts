/** `pmi cpus`: one row per possible CPU — per-CPU area, online, current task, run queue (docs/cli.md, "CPUs"). */
import type { Command } from 'commander';
import { listCpus } from '@pmi/linux';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { printJson, printRows } from '../output.js';

type Run = (action: () => Promise<number>) => Promise<void>;

export async function cpusCommand(opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const r = await listCpus(d);
    if (opts.json) {
      printJson({ rows: r.rows, warnings: r.warnings, nr_cpu_ids: r.nr_cpu_ids, current_source: r.current_source });
    } else {
      printRows(
        r.rows,
        [
          { key: 'cpu', align: 'right' },
          { key: 'online', header: 'ON', format: (v) => (v ? 'y' : 'n') },
          { key: 'per_cpu_offset', header: 'PER_CPU_OFFSET' },
          { key: 'nr_running', header: 'NR_RUN', align: 'right' },
          { key: 'current_pid', header: 'PID', align: 'right' },
          { key: 'current_comm', header: 'CURRENT' },
          { key: 'current_task', header: 'TASK' },
        ],
        r.warnings,
        { json: false },
      );
    }
    return r.partial ? EXIT_PARTIAL : 0;
  });
}

export function registerCpuCommands(program: Command, run: Run): void {
  program
    .command('cpus')
    .description('one row per possible CPU: online, per_cpu_offset, current task (pid, comm), run queue nr_running')
    .action((_o, cmd: Command) => run(() => cpusCommand(cmd.optsWithGlobals())));
}
