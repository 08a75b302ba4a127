/** `pmi lsmod`, `pmi dmesg`: loaded modules and the kernel log, read from memory. */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { locateBtf, imageVaToPhys, KernelObjects, type DiscoveredKernel } from '@pmi/kernel';
import {
  dmesgLines,
  followKernelLog,
  LOG_LEVEL_NAMES,
  listModules,
  readKernelLog,
  type LogRecord,
  type ModuleRow,
} from '@pmi/linux';
import { withKernel, type KernelOptions } from '../kernel-context.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { printJson, printRows, printWarnings } from '../output.js';

const hex64 = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

/** KernelObjects for a discovered kernel; locates BTF in memory when discovery skipped it. */
export async function kernelObjects(k: DiscoveredKernel): Promise<KernelObjects> {
  if (!k.btf) {
    const end = k.symbols.get('_end');
    const hint = end ? { start: k.facts.textPhys, end: imageVaToPhys(end.address, k.facts.physBase) } : undefined;
    k.btf = (await locateBtf(k.mem, { hint })).btf;
  }
  return KernelObjects.from(k);
}

export interface LsmodRow {
  name: string;
  size: number;
  refcount: number;
  used_by: string[];
  state: string;
  base: string;
  taint: string;
  module_address: string;
}

export function lsmodRow(m: ModuleRow): LsmodRow {
  return {
    name: m.name,
    size: m.size,
    refcount: m.refcount,
    used_by: m.deps,
    state: m.state,
    base: hex64(m.base),
    taint: m.taint,
    module_address: hex64(m.va),
  };
}

export async function lsmodCommand(opts: KernelOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = await kernelObjects(d);
    const r = await listModules(k);
    const warnings = [...d.facts.warnings, ...r.warnings];
    printRows(
      r.rows.map(lsmodRow),
      [
        { key: 'name', header: 'MODULE' },
        { key: 'size', align: 'right' },
        { key: 'refcount', header: 'USED', align: 'right' },
        { key: 'used_by', header: 'BY', format: (v) => ((v as string[]).length ? (v as string[]).join(',') : '-') },
        { key: 'state' },
        { key: 'base' },
        { key: 'taint', format: (v) => (v ? `(${v as string})` : '') },
      ],
      warnings,
      { json: !!opts.json },
      { layout: r.layout },
    );
    return r.warnings.length > 0 ? EXIT_PARTIAL : 0;
  });
}

export interface DmesgRow {
  seq: number;
  /** Seconds since boot (microsecond precision, as dmesg prints). */
  ts: number;
  level: number;
  level_name: string;
  facility: number;
  caller: string;
  text: string;
  cont: boolean;
}

export function dmesgRow(r: LogRecord): DmesgRow {
  const us = r.tsNsec / 1000n;
  return {
    seq: r.seq,
    ts: Number(us / 1_000_000n) + Number(us % 1_000_000n) / 1e6,
    level: r.level,
    level_name: LOG_LEVEL_NAMES[r.level] ?? String(r.level),
    facility: r.facility,
    caller: r.caller,
    text: r.text,
    cont: r.cont,
  };
}

export interface DmesgOptions extends KernelOptions {
  follow?: boolean;
  tail?: number;
  interval?: number;
}

export async function dmesgCommand(opts: DmesgOptions): Promise<number> {
  return withKernel(opts, async (d) => {
    const k = await kernelObjects(d);
    const r = await readKernelLog(k);
    const warnings = [...d.facts.warnings, ...r.warnings];
    const records = opts.tail !== undefined ? r.records.slice(Math.max(0, r.records.length - opts.tail)) : r.records;
    if (!opts.follow) {
      if (opts.json) printJson({ format: r.format, rows: records.map(dmesgRow), warnings });
      else {
        for (const rec of records) process.stdout.write(dmesgLines(rec).join('\n') + '\n');
        printWarnings(warnings);
      }
      return r.warnings.length > 0 ? EXIT_PARTIAL : 0;
    }
    // --follow: one line per record (JSON lines with --json) until SIGINT/SIGTERM
    const emit = (rec: LogRecord) =>
      process.stdout.write(opts.json ? JSON.stringify(dmesgRow(rec)) + '\n' : dmesgLines(rec).join('\n') + '\n');
    for (const rec of records) emit(rec);
    printWarnings(warnings);
    if (!d.mem.info.live) {
      printWarnings([`--follow: the source ${d.mem.info.uri} is not live; nothing new will appear`]);
      return r.warnings.length > 0 ? EXIT_PARTIAL : 0;
    }
    const ac = new AbortController();
    const stop = () => ac.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let partial = r.warnings.length > 0;
    try {
      for await (const rec of followKernelLog(k, {
        fromSeq: r.nextSeq,
        intervalMs: opts.interval ?? 200,
        signal: ac.signal,
        onWarning: (w) => {
          partial = true;
          printWarnings([w]);
        },
      }))
        emit(rec);
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    return partial ? EXIT_PARTIAL : 0;
  });
}

function count(name: string) {
  return (t: string): number => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name}: not a count: ${t}`);
    return n;
  };
}

export function registerKernelViewCommands(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('lsmod')
    .description('loaded kernel modules as /proc/modules shows them: name, size, refcount, used by, state, base, taint')
    .action((_o, cmd: Command) => run(() => lsmodCommand(cmd.optsWithGlobals())));
  program
    .command('dmesg')
    .description(
      'the kernel log from the printk ring buffer, as dmesg prints it (--json: rows with seq, ts, level, caller)',
    )
    .option('-n, --tail <n>', 'only the last n records', count('--tail'))
    .option('-f, --follow', 'keep polling a live source and print new records until SIGINT (JSON lines with --json)')
    .option('--interval <ms>', 'poll interval for --follow', count('--interval'), 200)
    .action((_o, cmd: Command) => run(() => dmesgCommand(cmd.optsWithGlobals())));
}
