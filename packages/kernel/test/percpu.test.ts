/**
 * Per-CPU data on synthetic kernels: CPU masks bounded by nr_cpu_ids, per-CPU variables from BTF's
 * `.data..percpu` DATASEC or — BTF without per-CPU VARs, like Debian's 5.10 — from kallsyms (zero-based
 * 'A' offsets, or symbols linked at real addresses minus `__per_cpu_start`), typed by PERCPU_TYPES or
 * the caller, and the current task from `current_task` or `pcpu_hot.current_task`.
 */
import { describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import {
  CountingMemory,
  KernelObjects,
  SymbolTableBuilder,
  X86Paging,
  cpumaskBits,
  parseBtf,
  KernelScratchMemory,
} from '@pmi/kernel';
import { BtfBuilder } from './fixtures/btf/builder.js';

const BASE = 0xffff888000000000n;

class Mem extends KernelScratchMemory {}

type Flavour =
  | 'datasec' // BTF VARs for current_task and runqueues
  | 'datasec-pcpu_hot' // BTF VARs for pcpu_hot (6.2–6.14): no current_task
  | 'kallsyms-zero' // no DATASEC; per-CPU symbols are absolute offsets ('A'), __per_cpu_start = 0
  | 'kallsyms-va'; // no DATASEC; per-CPU symbols linked at real addresses (6.15+ style)

const RQ_OFF = 0x40n;
const CUR_OFF = 0x8n;
const SECTION = 0x1000n;

/**
 * A kernel with `nr` CPU ids whose possible/online masks are given. CPU c's per-CPU area holds
 * current = task(c) and runqueues.nr_running = 10 + c.
 */
function kernel(
  flavour: Flavour,
  opts: { nr?: number; possible?: number[]; online?: number[]; nrValue?: number } = {},
) {
  const nr = opts.nr ?? 4;
  const possible = opts.possible ?? [0, 1, 3];
  const online = opts.online ?? [0, 3];
  const b = new BtfBuilder();
  const uint = b.int('unsigned int', 4);
  const int = b.int('int', 4, { signed: true });
  const ulong = b.int('long unsigned int', 8);
  const char = b.int('char', 1, { char: true });
  const task = b.struct('task_struct', 24, [
    { name: 'pid', type: int, bits: 0 },
    { name: 'comm', type: b.array(char, int, 16), bits: 64 },
  ]);
  const taskp = b.ptr(task);
  const rq = b.struct('rq', 16, [
    { name: 'nr_running', type: uint, bits: 0 },
    { name: 'curr', type: taskp, bits: 64 },
  ]);
  const hot = b.struct('pcpu_hot', 16, [
    { name: 'cpu_number', type: int, bits: 0 },
    { name: 'current_task', type: taskp, bits: 64 },
  ]);
  b.struct('cpumask', 8, [{ name: 'bits', type: b.array(ulong, int, 1), bits: 0 }]);
  if (flavour === 'datasec') {
    const vc = b.var('current_task', taskp);
    const vr = b.var('runqueues', rq);
    b.datasec('.data..percpu', Number(SECTION), [
      [vc, Number(CUR_OFF), 8],
      [vr, Number(RQ_OFF), 16],
    ]);
  } else if (flavour === 'datasec-pcpu_hot') {
    const vh = b.var('pcpu_hot', hot);
    const vr = b.var('runqueues', rq);
    b.datasec('.data..percpu', Number(SECTION), [
      [vh, 0, 16],
      [vr, Number(RQ_OFF), 16],
    ]);
  }
  const btf = parseBtf(b.build());

  const m = new Mem();
  const nrVa = m.alloc(4);
  m.u32(nrVa, opts.nrValue ?? nr);
  const pco = m.alloc(8 * nr, 8);
  const next = m.alloc(8, 8); // the symbol after __per_cpu_offset[] bounds it
  const possibleVa = m.alloc(8);
  const onlineVa = m.alloc(8);
  m.u64(
    possibleVa,
    possible.reduce((a, c) => a | (1n << BigInt(c)), 0n),
  );
  m.u64(
    onlineVa,
    online.reduce((a, c) => a | (1n << BigInt(c)), 0n),
  );
  // the per-CPU section template (VA-linked flavour) and one area per CPU id
  const template = m.alloc(Number(SECTION), 4096);
  const linkedStart = flavour === 'kallsyms-va' ? template : 0n;
  const tasks: bigint[] = [];
  for (let c = 0; c < nr; c++) {
    const area = m.alloc(Number(SECTION), 4096);
    m.u64(pco + BigInt(8 * c), area - linkedStart);
    const t = m.alloc(24);
    m.u32(t, 100 + c);
    tasks.push(t);
    if (flavour === 'datasec-pcpu_hot') m.u64(area + 8n, t);
    else m.u64(area + CUR_OFF, t);
    m.u32(area + RQ_OFF, 10 + c);
    m.u64(area + RQ_OFF + 8n, t);
  }
  const sb = new SymbolTableBuilder();
  const syms: [string, string, bigint][] = [
    ['nr_cpu_ids', 'D', nrVa],
    ['__per_cpu_offset', 'D', pco],
    ['after_per_cpu_offset', 'D', next],
    ['__cpu_possible_mask', 'D', possibleVa],
    ['__cpu_online_mask', 'D', onlineVa],
  ];
  if (flavour.startsWith('kallsyms')) {
    const at = (off: bigint) => linkedStart + off;
    const t = flavour === 'kallsyms-zero' ? 'A' : 'D';
    syms.push(
      ['__per_cpu_start', t, at(0n)],
      ['current_task', t, at(CUR_OFF)],
      ['runqueues', t, at(RQ_OFF)],
      ['cpu_info_unknown', t, at(0x80n)],
      ['__per_cpu_end', t, at(SECTION)],
      ['not_percpu', 'D', BASE + 0x10n],
    );
  }
  syms.sort((a, z) => (BigInt.asUintN(64, a[2]) < BigInt.asUintN(64, z[2]) ? -1 : 1));
  for (const [name, type, va] of syms) sb.add(name, type, va);
  const paging = new X86Paging(new CountingMemory(m.pt.memory()), m.pt.dtb, 4);
  return { k: new KernelObjects({ paging, btf, symbols: sb.build() }), tasks };
}

async function rejects(p: Promise<unknown>): Promise<PmiError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(PmiError);
    return e as PmiError;
  }
  throw new Error('expected a rejection');
}

describe('cpumask bitmaps', () => {
  it('bits below nbits, little-endian words, across words', () => {
    const b = new Uint8Array(16);
    b[0] = 0b1011; // cpus 0, 1, 3
    b[8] = 0x01; // cpu 64
    b[15] = 0x80; // cpu 127
    expect(cpumaskBits(b, 128)).toEqual([0, 1, 3, 64, 127]);
    expect(cpumaskBits(b, 64)).toEqual([0, 1, 3]);
    expect(cpumaskBits(b, 2)).toEqual([0, 1]);
    expect(cpumaskBits(new Uint8Array(8), 64)).toEqual([]);
    expect(cpumaskBits(b, 1000)).toEqual([0, 1, 3, 64, 127]); // never past the bytes
  });
});

describe.each(['datasec', 'datasec-pcpu_hot', 'kallsyms-zero', 'kallsyms-va'] as const)('per-CPU, %s', (flavour) => {
  it('possible and online CPUs from the masks, bounded by nr_cpu_ids', async () => {
    const { k } = kernel(flavour, { nr: 4, possible: [0, 1, 3, 5], online: [0, 3, 6] });
    expect(await k.nrCpuIds()).toBe(4);
    expect(await k.cpuCount()).toBe(4);
    expect((await k.cpuOffsets()).length).toBe(4);
    expect(await k.possibleCpus()).toEqual([0, 1, 3]); // bit 5 ≥ nr_cpu_ids is ignored
    expect(await k.onlineCpus()).toEqual([0, 3]);
  });

  it('each possible CPU: current task, run queue; an impossible CPU is refused', async () => {
    const { k, tasks } = kernel(flavour);
    expect(k.currentTaskSource()).toBe(flavour === 'datasec-pcpu_hot' ? 'pcpu_hot.current_task' : 'current_task');
    const R = k.layout('rq', ['nr_running', 'curr']);
    for (const cpu of await k.possibleCpus()) {
      expect(await k.currentTask(cpu)).toBe(tasks[cpu]);
      const rq = await k.percpu('runqueues', cpu, R);
      expect(rq.u32('nr_running')).toBe(10 + cpu);
      expect(rq.ptr('curr')).toBe(tasks[cpu]);
      // without a layout: the type comes from BTF (VAR) or PERCPU_TYPES (kallsyms)
      expect((await k.percpu('runqueues', cpu)).u32('nr_running')).toBe(10 + cpu);
    }
    expect(k.percpuVar('runqueues').source).toBe(flavour.startsWith('kallsyms') ? 'kallsyms' : 'btf');
    expect(k.percpuVar('runqueues').offset).toBe(RQ_OFF);
    const e = await rejects(k.percpu('runqueues', 2, R));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toMatch(/runqueues.*cpu 2 is not a possible CPU/);
    expect((await rejects(k.percpu('runqueues', 4, R))).message).toMatch(/out of range \(nr_cpu_ids 4\)/);
  });

  it('a missing per-CPU variable is E_NOT_FOUND naming it and what was missing', async () => {
    const { k } = kernel(flavour);
    const e = await rejects(k.percpuValue('no_such_var', 0, 'pointer'));
    expect(e.code).toBe('E_NOT_FOUND');
    expect(e.message).toContain("'no_such_var'");
    expect(e.message).toMatch(
      flavour.startsWith('kallsyms')
        ? /no \.data\.\.percpu DATASEC and no kallsyms symbol/
        : /not in BTF's \.data\.\.percpu/,
    );
    expect(e.data).toMatchObject({ name: 'no_such_var' });
    expect(k.hasPercpu('no_such_var')).toBe(false);
    expect(k.hasPercpu('runqueues')).toBe(true);
  });
});

describe('per-CPU through kallsyms only', () => {
  it('a variable of unknown type needs a type from the caller', async () => {
    const { k } = kernel('kallsyms-zero');
    const e = await rejects(k.percpu('cpu_info_unknown', 0));
    expect(e.code).toBe('E_NOT_FOUND');
    expect(e.message).toMatch(/'cpu_info_unknown': no type .*pass a layout/);
    await expect(k.percpuValue('cpu_info_unknown', 0)).rejects.toThrow(/'cpu_info_unknown': no type/);
    expect(await k.percpuValue('cpu_info_unknown', 1, 'unsigned int')).toBe(0);
    expect(await k.percpuValue('runqueues', 1, 'unsigned int')).toBe(11); // a hint wins
  });

  it('a symbol outside [__per_cpu_start, __per_cpu_end) is not a per-CPU variable', async () => {
    const { k } = kernel('kallsyms-va');
    const e = await rejects(k.percpuValue('not_percpu', 0, 'pointer'));
    expect(e.code).toBe('E_NOT_FOUND');
    expect(e.message).toMatch(/'not_percpu'.*outside the per-CPU section/);
  });

  it('a corrupt nr_cpu_ids (larger than __per_cpu_offset[] has room for) is refused, naming it', async () => {
    const { k } = kernel('kallsyms-zero', { nrValue: 100_000 });
    const e = await rejects(k.cpuOffsets());
    expect(e.code).toBe('E_NOT_FOUND');
    expect(e.message).toMatch(/nr_cpu_ids is 100000/);
    const z = kernel('datasec', { nrValue: 0 }).k;
    await expect(z.possibleCpus()).rejects.toThrow(/nr_cpu_ids is 0/);
    // 5 ids but __per_cpu_offset[] only has room for 4 (the next symbol follows)
    await expect(kernel('datasec', { nr: 4, nrValue: 5 }).k.cpuOffsets()).rejects.toThrow(/nr_cpu_ids is 5/);
  });

  it('no CPU mask symbol: E_NOT_FOUND listing the symbols tried', async () => {
    const { k } = kernel('datasec');
    const e = await rejects(k.cpuMask('present'));
    expect(e.message).toMatch(/__cpu_present_mask, cpu_present_bits, cpu_present_mask/);
    expect(e.data).toMatchObject({ tried: ['__cpu_present_mask', 'cpu_present_bits', 'cpu_present_mask'] });
  });
});
