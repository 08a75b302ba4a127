/**
 * Process views: `pmi ps`, `pmi pstree`, `pmi cmdline`, `pmi env`, `pmi maps` (docs/cli.md, "Processes").
 * The library (@pmi/linux tasks/memory) produces typed rows; this file only renders them.
 */
import { Command, InvalidArgumentError } from 'commander';
import { findTask, kernelObjects, listMaps, listTasks, processArgs, processEnv, type TaskRow } from '@pmi/linux';
import { PmiError, isPmiError, parseSafeNumber } from '@pmi/core';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { printJson, printRows, printWarnings } from '../output.js';

type Run = (action: () => Promise<number>) => Promise<void>;

function pidArg(t: string): number {
  try {
    const n = parseSafeNumber(t, 'PID');
    if (n < 0) throw new Error('PID must be ≥ 0');
    return n;
  } catch (e) {
    throw new InvalidArgumentError(isPmiError(e) ? e.message : String(e));
  }
}

const PS_FIELDS = [
  'pid',
  'ppid',
  'uid',
  'gid',
  'comm',
  'task_comm',
  'cmdline',
  'kthread',
  'state',
  'start_time',
  'threads',
  'task',
];

/** The JSON row of `pmi ps`: exactly the documented fields (+ tgid with --threads). */
function psRow(r: TaskRow, threads: boolean): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const f of PS_FIELDS) o[f] = r[f as keyof TaskRow];
  if (threads) o.tgid = r.tgid;
  return o;
}

export async function psCommand(opts: KernelOptions & { threads?: boolean }): Promise<number> {
  return withKernel(opts, async (d) => {
    const r = await listTasks(d, { threads: !!opts.threads });
    const threads = !!opts.threads;
    const boot = r.bootTime ? Number(r.bootTime.epochNs / 1_000_000n) : undefined;
    const rows = r.rows.map((x) => psRow(x, threads));
    printRows(
      rows,
      [
        { key: 'pid', align: 'right' },
        ...(threads ? [{ key: 'tgid', align: 'right' as const }] : []),
        { key: 'ppid', align: 'right' },
        { key: 'uid', align: 'right' },
        { key: 'gid', align: 'right' },
        { key: 'state', header: 'S' },
        {
          key: 'start_time',
          header: boot !== undefined ? 'STARTED' : 'START(s)',
          format: (v) =>
            boot !== undefined
              ? new Date(boot + (v as number) * 1000).toISOString().replace('T', ' ').slice(0, 19)
              : (v as number).toFixed(2),
        },
        { key: 'threads', header: 'THR', align: 'right' },
        {
          key: 'cmdline',
          header: 'COMMAND',
          format: (v, row) => (row.kthread ? `[${String(row.comm)}]` : (v as string) || String(row.comm)),
        },
      ],
      r.warnings,
      { json: !!opts.json },
    );
    return r.partial ? EXIT_PARTIAL : 0;
  });
}

interface TreeNode {
  pid: number;
  comm: string;
  children: TreeNode[];
}

export async function pstreeCommand(opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const r = await listTasks(d, { cmdline: false });
    const nodes = new Map<number, TreeNode>(r.rows.map((x) => [x.pid, { pid: x.pid, comm: x.comm, children: [] }]));
    const roots: TreeNode[] = [];
    for (const x of r.rows) {
      const parent = x.ppid !== x.pid ? nodes.get(x.ppid) : undefined;
      if (parent) parent.children.push(nodes.get(x.pid)!);
      else roots.push(nodes.get(x.pid)!);
    }
    if (opts.json) printJson({ rows: roots, warnings: r.warnings });
    else {
      const lines: string[] = [];
      const draw = (n: TreeNode, prefix: string, last: boolean, top: boolean) => {
        lines.push(top ? `${n.comm}(${n.pid})` : `${prefix}${last ? '└─' : '├─'}${n.comm}(${n.pid})`);
        const p = top ? '' : prefix + (last ? '  ' : '│ ');
        n.children.forEach((c, i) => draw(c, p, i === n.children.length - 1, false));
      };
      for (const root of roots) draw(root, '', true, true);
      process.stdout.write(lines.join('\n') + '\n');
      printWarnings(r.warnings);
    }
    return r.partial ? EXIT_PARTIAL : 0;
  });
}

async function stringsCommand(pid: number, opts: KernelOptions, which: 'cmdline' | 'env'): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = kernelObjects(d);
    const r = which === 'cmdline' ? await processArgs(k, pid) : await processEnv(k, pid);
    const warnings = r.error ? [`${which} truncated: ${r.error.message}`] : [];
    if (opts.json) {
      printJson(
        which === 'cmdline'
          ? { pid, argv: r.strings, cmdline: r.strings.join(' '), warnings }
          : { pid, env: r.strings, warnings },
      );
    } else {
      process.stdout.write(which === 'cmdline' ? r.strings.join(' ') + '\n' : r.strings.map((s) => s + '\n').join(''));
      printWarnings(warnings);
    }
    return r.error ? EXIT_PARTIAL : 0;
  });
}

export async function mapsCommand(pid: number, opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = kernelObjects(d);
    const t = await findTask(k, pid);
    if (t.isNull('mm')) {
      throw new PmiError('E_NOT_FOUND', 'cli', `pid ${pid} has no address space (kernel thread or exited)`, { pid });
    }
    const r = await listMaps(k, t.ptr('mm'));
    if (opts.json) printJson({ rows: r.rows, warnings: r.warnings, method: r.method });
    else {
      const lines = r.rows.map((m) => {
        const head = `${m.start.slice(2).padStart(8, '0')}-${m.end.slice(2).padStart(8, '0')} ${m.perms} ${m.offset
          .slice(2)
          .padStart(8, '0')} ${m.dev} ${m.inode}`;
        return m.path ? head.padEnd(73) + m.path : head + ' ';
      });
      process.stdout.write(lines.join('\n') + (lines.length ? '\n' : ''));
      printWarnings(r.warnings);
    }
    return r.partial ? EXIT_PARTIAL : 0;
  });
}

export function registerProcessCommands(program: Command, run: Run): void {
  program
    .command('ps')
    .description(
      'processes (or --threads): pid, ppid, uid, gid, comm, cmdline, kthread, state, start_time, threads, task',
    )
    .option('--threads', 'one row per thread (pid = thread id; adds tgid)')
    .action((_o, cmd: Command) => run(() => psCommand(cmd.optsWithGlobals())));
  program
    .command('pstree')
    .description('the process tree (real_parent); --json nests {pid, comm, children}')
    .action((_o, cmd: Command) => run(() => pstreeCommand(cmd.optsWithGlobals())));
  program
    .command('cmdline')
    .description("a process's command line, read from its own memory (mm->arg_start..arg_end)")
    .argument('<pid>', 'process id', pidArg)
    .action((pid: number, _o, cmd: Command) => run(() => stringsCommand(pid, cmd.optsWithGlobals(), 'cmdline')));
  program
    .command('env')
    .description("a process's environment, read from its own memory (mm->env_start..env_end)")
    .argument('<pid>', 'process id', pidArg)
    .action((pid: number, _o, cmd: Command) => run(() => stringsCommand(pid, cmd.optsWithGlobals(), 'env')));
  program
    .command('maps')
    .description("a process's memory map, like /proc/PID/maps (VMAs from the maple tree or mmap list)")
    .argument('<pid>', 'process id', pidArg)
    .action((pid: number, _o, cmd: Command) => run(() => mapsCommand(pid, cmd.optsWithGlobals())));
}
