/**
 * `pmi cpus` vs QEMU's own view of each vCPU, recorded while the guest was paused for the snapshot
 * (`vcpus_path`: GS base, KernelGSbase, RSP, CPL, HLT per vCPU). Per CPU:
 * - its per-CPU offset is the GS base in kernel mode (cpl 0), KernelGSbase in user mode (cpl 3);
 * - its current task is checked independently of pmi's choice of per-CPU variable: in kernel mode
 *   the vCPU's RSP lies on that task's kernel stack (`task->stack` .. + THREAD_SIZE), or on the CPU's
 *   hard-IRQ stack when an interrupt was being handled; in user mode the task is a user process the
 *   guest's /proc listed; a halted vCPU runs its idle task, `swapper/N`;
 * - the run queue: a CPU in user mode has its task on the run queue (nr_running ≥ 1), and
 *   `rq->curr` equals the per-CPU current task.
 * The command is run as a user meets it (the built CLI on the snapshot); the library gives the same rows.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { PhysicalMemory } from '@pmi/core';
import type { KernelObjects } from '@pmi/kernel';
import {
  openLabVm,
  type GroundTruth,
  type ThreadEntry,
  type ThreadListing,
  type VcpuEntry,
  type VcpuListing,
} from '@pmi/lab';
import { listCpus, type CpuRow } from '../src/index.js';
import { openLabKernel } from './lab-kernel.js';

const targets = inject('labTargets').filter((t) => t.smp > 1);
const CLI = join(import.meta.dirname, '../../cli/bin/pmi.js');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-cpus-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const KERNEL_HALF = 0xff00000000000000n; // below every kernel address in 4- and 5-level paging

async function pmiJson(args: string[]): Promise<{ code: number; doc: { rows: CpuRow[]; warnings: string[] } }> {
  const r = await promisify(execFile)(process.execPath, [CLI, ...args, '--json'], { timeout: 120_000 }).then(
    (o) => ({ code: 0, stdout: o.stdout }),
    (e: { code: number; stdout: string; stderr: string }) => {
      throw new Error(`pmi ${args.join(' ')} exited ${e.code}: ${e.stderr}`);
    },
  );
  return { code: r.code, doc: JSON.parse(r.stdout) as { rows: CpuRow[]; warnings: string[] } };
}

/** x86-64 THREAD_SIZE: 16 KiB, doubled by KASAN. */
function threadSize(k: KernelObjects): bigint {
  return k.symbols.get('kasan_early_shadow_page') ? 32768n : 16384n;
}

/** The CPU's hard-IRQ stack [low, high): per-CPU hardirq_stack_ptr, or pcpu_hot's (6.2–6.14). */
async function irqStack(k: KernelObjects, cpu: number): Promise<[bigint, bigint] | undefined> {
  let top: bigint | undefined;
  if (k.hasPercpu('hardirq_stack_ptr')) top = BigInt(await k.percpuValue('hardirq_stack_ptr', cpu, 'pointer'));
  else if (k.hasPercpu('pcpu_hot') && k.hasField('pcpu_hot', 'hardirq_stack_ptr'))
    top = (await k.percpu('pcpu_hot', cpu, k.layout('pcpu_hot', ['hardirq_stack_ptr']))).ptr('hardirq_stack_ptr');
  if (!top) return undefined;
  return [top - 16384n, top + 16n];
}

describe.each(targets.map((t) => [t.id, t] as const))('pmi cpus vs QEMU vCPUs, lab target %s', (_id, target) => {
  let vcpus: VcpuEntry[];
  let truth: GroundTruth;
  let after: ThreadEntry[];
  let mem: PhysicalMemory;
  let k: KernelObjects;

  beforeAll(async () => {
    vcpus = (JSON.parse(readFileSync(target.vcpus_path, 'utf8')) as VcpuListing).vcpus;
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    after = (JSON.parse(readFileSync(target.threads_after_path, 'utf8')) as ThreadListing).threads;
    ({ mem, k } = await openLabKernel('raw:' + target.snapshot_path, target));
  });
  afterAll(async () => {
    await mem?.close();
  });

  /**
   * The checks of one snapshot: `pmi cpus` (the CLI) against the vCPUs QEMU saw in its pause. Returns
   * the rows and notes (IRQ stacks, pids no listing had).
   */
  const CPU_ENTRY_AREA = [0xfffffe0000000000n, 0xfffffe8000000000n] as const;

  async function checkCpus(
    snapshot: string,
    vc: VcpuEntry[],
    kk: KernelObjects,
    userTids: ReadonlySet<number>,
  ): Promise<{ rows: CpuRow[]; notes: string[] }> {
    const { code, doc } = await pmiJson(['--source', 'raw:' + snapshot, 'cpus']);
    expect(code).toBe(0);
    expect(doc.warnings).toEqual([]);
    expect(vc.length).toBe(target.smp);
    expect(doc.rows.map((r) => r.cpu)).toEqual(vc.map((v) => v.cpu));
    expect(doc.rows.every((r) => r.online)).toBe(true);
    expect((await listCpus(kk)).rows).toEqual(doc.rows);
    const stackSize = threadSize(kk);
    const F = kk.layout('task_struct', ['pid', 'flags', 'mm']);
    const notes: string[] = [];
    for (const v of vc) {
      const row = doc.rows.find((r) => r.cpu === v.cpu)!;
      const gs = BigInt(v.gs_base);
      // kernel mode: GS base is the per-CPU base — except in the few entry instructions before swapgs
      const kernelGs = v.cpl === 0 && gs >= KERNEL_HALF ? v.gs_base : v.kernel_gs_base;
      expect(row.per_cpu_offset, `cpu ${v.cpu} (cpl ${v.cpl})`).toBe(kernelGs);
      expect(row.current_task).toMatch(/^0x[0-9a-f]+$/);
      if (v.halted) {
        expect([row.current_pid, row.current_comm, row.idle], `halted cpu ${v.cpu} runs its idle task`).toEqual([
          0,
          `swapper/${v.cpu}`,
          true,
        ]);
      }
      if (v.cpl === 0) {
        const rsp = BigInt(v.rsp);
        const lo = BigInt(row.kernel_stack!);
        const onTask = rsp >= lo && rsp < lo + stackSize;
        const irq = onTask ? undefined : await irqStack(kk, v.cpu);
        const onIrq = irq !== undefined && rsp >= irq[0] && rsp < irq[1];
        // The entry trampoline stack and the IST (NMI, #DB, #DF, #MC) stacks live in the CPU entry
        // area, one P4D slot at 0xfffffe0000000000 on 4- and 5-level kernels alike (per-CPU placement
        // randomized since 6.2): a vCPU caught in entry code (e.g. a user loop's timer tick) is there.
        const onEntry = rsp >= CPU_ENTRY_AREA[0] && rsp < CPU_ENTRY_AREA[1];
        expect(
          onTask || onIrq || onEntry,
          `cpu ${v.cpu}: RSP ${v.rsp} not on task ${row.current_task}'s stack [${row.kernel_stack}, +${stackSize}), the IRQ stack nor the CPU entry area`,
        ).toBe(true);
        if (onIrq) notes.push(`cpu ${v.cpu} in an interrupt (RSP on the IRQ stack)`);
        if (onEntry) notes.push(`cpu ${v.cpu} in entry/exception code (RSP ${v.rsp} in the CPU entry area)`);
      } else {
        // user mode: a user task (not idle, not a kernel thread, with an mm), on the run queue
        expect(row.idle).toBe(false);
        const t = await kk.read(BigInt(row.current_task!), F);
        expect(t.num('pid')).toBe(row.current_pid);
        expect(t.num('flags') & 0x00200000, `cpu ${v.cpu}: pid ${row.current_pid} is a kernel thread`).toBe(0);
        expect(t.isNull('mm')).toBe(false);
        if (!userTids.has(row.current_pid!))
          notes.push(`cpu ${v.cpu} runs pid ${row.current_pid} (${row.current_comm})`);
        expect(row.nr_running).toBeGreaterThanOrEqual(1);
      }
      expect(row.rq_curr).toBe(row.current_task);
      expect(row.nr_running).toBeGreaterThanOrEqual(0);
    }
    process.stderr.write(
      `[cpus] ${target.id}: ${doc.rows
        .map((r) => `cpu${r.cpu} ${r.per_cpu_offset} ${r.current_pid}:${r.current_comm} nr_running=${r.nr_running}`)
        .join('; ')} — vCPUs ${vc.map((v) => `cpl${v.cpl}${v.halted ? ' hlt' : ''}`).join(', ')}${
        notes.length ? ` (${notes.join('; ')})` : ''
      }\n`,
    );
    return { rows: doc.rows, notes };
  }

  it('one row per vCPU: per-CPU offset = the kernel GS base, the current task owns the stack RSP is on', async () => {
    const kthreadPids = new Set(truth.ps.filter((p) => p.kernel_thread).map((p) => p.pid));
    const userTids = new Set([...truth.threads, ...after].filter((t) => !kthreadPids.has(t.pid)).map((t) => t.tid));
    await checkCpus(target.snapshot_path, vcpus, k, userTids);
  });

  it('a busy guest (a user loop per vCPU): the CPUs run it, in user mode the kernel GS base is KernelGSbase', async () => {
    const vm = await openLabVm(target.name);
    const spin = `busybox timeout -s KILL 120 sh -c 'echo -n pmi-spin > /proc/$$/comm; while :; do :; done' >/dev/null 2>&1 &`;
    const kill = `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = pmi-spin ] && kill -9 \${p#/proc/}; done; true`;
    const path = join(scratch, `${target.name}.busy.ram`);
    try {
      await vm.run(Array.from({ length: target.smp }, () => spin).join('\n') + '\nsleep 2', { timeoutMs: 60_000 });
      const snap = await vm.snapshot(path);
      const vc = (JSON.parse(readFileSync(snap.vcpus_path, 'utf8')) as VcpuListing).vcpus;
      const busy = await openLabKernel('raw:' + path, target);
      try {
        const { rows } = await checkCpus(path, vc, busy.k, new Set());
        // the loops are what the CPUs run (a vCPU may be caught in an interrupt or the scheduler)
        const spinning = rows.filter((r) => r.current_comm === 'pmi-spin');
        expect(spinning.length, JSON.stringify(rows)).toBeGreaterThanOrEqual(1);
        expect(vc.some((v) => !v.halted)).toBe(true);
        for (const r of spinning) {
          expect(r.idle).toBe(false);
          expect(r.nr_running).toBeGreaterThanOrEqual(1);
        }
      } finally {
        await busy.mem.close();
      }
    } finally {
      await vm.run(kill, { timeoutMs: 60_000 }).catch(() => undefined);
      rmSync(path, { force: true });
      rmSync(path + '.vcpus.json', { force: true });
    }
  });

  it("the per-CPU current task agrees with each CPU's run queue and idle task, from BTF or kallsyms alike", async () => {
    const possible = await k.possibleCpus();
    expect(possible).toEqual(vcpus.map((v) => v.cpu));
    const R = k.layout('rq', ['cpu', 'idle', 'curr']);
    const T = k.layout('task_struct', ['pid', 'comm']);
    for (const cpu of possible) {
      const rq = await k.percpu('runqueues', cpu, R);
      expect(rq.num('cpu')).toBe(cpu);
      const idle = await k.read(rq.ptr('idle'), T);
      expect([idle.num('pid'), idle.str('comm')]).toEqual([0, `swapper/${cpu}`]);
      expect(await k.currentTask(cpu)).toBe(rq.ptr('curr'));
    }
    // the way the kernel keeps `current` is found from what it has
    const source = k.currentTaskSource();
    expect(source).toBe(k.hasPercpu('current_task') ? 'current_task' : 'pcpu_hot.current_task');
    process.stderr.write(
      `[cpus] ${target.id}: current from ${source}, runqueues via ${k.percpuVar('runqueues').source}\n`,
    );
  });
});
