import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import {
  CountingMemory,
  discoverKernel,
  KernelObjects,
  X86Paging,
  type KernelFacts,
  type StructView,
} from '@pmi/kernel';
import { resolveKernel, type GroundTruth } from '@pmi/lab';

const targets = inject('labTargets');

interface Row {
  pid: number;
  ppid: number;
  uid: number;
  gid: number;
  comm: string;
}

describe.each(targets.map((t) => [t.id, t] as const))('typed kernel objects, lab target %s', (_id, target) => {
  let mem: PhysicalMemory;
  let k: KernelObjects;
  let truth: GroundTruth;
  let facts: KernelFacts;

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    mem = await openSource('raw:' + target.snapshot_path);
    const d = await discoverKernel(mem);
    facts = d.facts;
    k = KernelObjects.from(d);
  });
  afterAll(async () => {
    await mem?.close();
  });

  it('init_task.comm is swapper/0, pid 0', async () => {
    const init = await k.global('init_task', k.layout('task_struct', ['pid', 'tgid', 'comm', 'flags']));
    expect(['swapper/0', 'swapper']).toContain(init.str('comm'));
    expect(init.int('pid')).toBe(0);
    expect(init.va).toBe(k.symbol('init_task'));
  });

  it('walks init_task.tasks: (pid, comm), ppid via real_parent->tgid, uid/gid via cred match ps', async () => {
    const T = k.layout('task_struct', [
      'pid',
      'tgid',
      'comm',
      'tasks',
      'flags',
      'real_parent.tgid',
      'cred.uid',
      'cred.gid',
    ]);
    const head = k.symbol('init_task') + BigInt(T.offsetOf('tasks'));
    const rows: Row[] = [];
    const run = async (): Promise<number> => {
      rows.length = 0;
      const t0 = performance.now();
      for await (const t of k.walkList(head, T, 'tasks', { name: 'init_task.tasks' })) rows.push(row(t));
      return performance.now() - t0;
    };
    const cold = await run();
    const warm = await run();
    const first = rows.slice();
    process.stderr.write(
      `[objects] ${target.id}: ${rows.length} tasks walked with pid/comm/ppid/uid/gid in ${cold.toFixed(1)} ms cold, ${warm.toFixed(1)} ms warm\n`,
    );
    expect(rows).toEqual(first);

    // The workload scripts loop on `sleep N`: those children come and go between the truth and the
    // snapshot, so they are reported but left out of the comparison.
    const workload = new Set(truth.ps.filter((p) => p.comm.startsWith('pmi-')).map((p) => p.pid));
    const churn = (r: { comm: string; ppid: number }) => r.comm === 'sleep' && workload.has(r.ppid);
    const mine = rows.filter((r) => !churn(r));
    const theirs = truth.ps.filter((p) => !churn(p));
    const inMem = new Map(mine.map((r) => [r.pid, r]));
    const inTruth = new Map(theirs.map((p) => [p.pid, p]));
    const both = theirs.filter((p) => inMem.has(p.pid));
    const onlyTruth = theirs.filter((p) => !inMem.has(p.pid)).map((p) => `${p.pid}:${p.comm}`);
    const onlyMem = mine.filter((r) => !inTruth.has(r.pid)).map((r) => `${r.pid}:${r.comm}`);
    process.stderr.write(
      `[objects] ${target.id}: truth ${truth.ps.length}, memory ${rows.length} ` +
        `(workload sleep children: truth ${truth.ps.length - theirs.length}, memory ${rows.length - mine.length}); ` +
        `matched ${both.length}; only in truth [${onlyTruth.join(' ')}], only in memory [${onlyMem.join(' ')}]\n`,
    );
    const union = new Set([...inMem.keys(), ...inTruth.keys()]).size;
    expect(both.length / union).toBeGreaterThanOrEqual(0.95);
    // the matched processes agree on every column. comm: /proc shows a kernel thread's full name and
    // a kworker's workqueue ("kworker/0:1-rcu_gp", "+" while it runs a work item, as wq_worker_comm
    // writes it); task->comm holds 15 bytes of the name.
    const bad: string[] = [];
    for (const p of both) {
      const m = inMem.get(p.pid)!;
      const commOk =
        m.comm === p.comm ||
        (p.kernel_thread &&
          p.comm.startsWith(m.comm) &&
          (m.comm.length === 15 || p.comm[m.comm.length] === '-' || p.comm[m.comm.length] === '+'));
      const want = { pid: p.pid, ppid: p.ppid, uid: p.uid, gid: p.gid };
      const got = { pid: m.pid, ppid: m.ppid, uid: m.uid, gid: m.gid };
      if (!commOk || JSON.stringify(got) !== JSON.stringify(want))
        bad.push(`truth ${JSON.stringify(p)} memory ${JSON.stringify(m)}`);
    }
    expect(bad).toEqual([]);
    // the same walk on a remote-like source (no readSync): one round trip per link, one per chunk
    // of objects, one per pointer level
    const remote = new CountingMemory(mem, { sync: false });
    const rk = new KernelObjects({
      paging: new X86Paging(remote, facts.dtb, facts.levels),
      btf: k.btf,
      symbols: k.symbols,
    });
    await rk.collectList(head, T, 'tasks'); // warm the page-table cache
    remote.reset();
    const t1 = performance.now();
    const r = await rk.collectList(head, T, 'tasks');
    process.stderr.write(
      `[objects] ${target.id}: remote-like walk: ${r.items.length} tasks, ${remote.batches} readBatch calls, ` +
        `${remote.bytes} bytes, ${(performance.now() - t1).toFixed(1)} ms\n`,
    );
    expect(r.error).toBeUndefined();
    expect(remote.batches).toBeLessThanOrEqual(r.items.length + 1 + 1 + T.depth);
    // the workload processes: all there, no difference allowed
    const pmi = truth.ps.filter((p) => p.comm.startsWith('pmi-'));
    expect(pmi.length).toBeGreaterThanOrEqual(3);
    expect(
      rows
        .filter((r) => r.comm.startsWith('pmi-'))
        .map((r) => r.pid)
        .sort(),
    ).toEqual(pmi.map((p) => p.pid).sort());
  });

  it('walks the modules list: names and state equal /proc/modules', async () => {
    const M = k.layout('module', ['name', 'list', 'state']);
    const names: string[] = [];
    const t0 = performance.now();
    for await (const m of k.walkList(k.symbol('modules'), M, 'list', { name: 'modules' })) {
      names.push(m.str('name'));
      expect(m.enumName('state')).toBe('MODULE_STATE_LIVE');
    }
    process.stderr.write(
      `[objects] ${target.id}: modules [${names.join(' ')}] in ${(performance.now() - t0).toFixed(1)} ms\n`,
    );
    expect(names.sort()).toEqual(truth.modules.map((m) => m.name).sort());
    for (const w of resolveKernel(target.kernel).workloadModules) expect(names).toContain(w);
  });

  it('globals: scalars, symbol-sized pointer arrays, arrays of structs, a pointer global', async () => {
    const pob = await k.globalValue('page_offset_base');
    expect(typeof pob).toBe('bigint');
    expect(pob).toBe(facts.pageOffsetBase);
    const sct = await k.globalArray('sys_call_table');
    expect(sct.length).toBeGreaterThan(300);
    expect(k.symbols.byAddress(sct.ptr(0))?.name).toBe('__x64_sys_read');
    expect(k.symbols.byAddress(sct.ptr(1))?.name).toBe('__x64_sys_write');
    if (k.hasType('gate_struct')) {
      const idt = await k.globalArray('idt_table');
      const g = idt.struct(0);
      const addr =
        (BigInt(g.u32('offset_high')) << 32n) | (BigInt(g.u16('offset_middle')) << 16n) | BigInt(g.u16('offset_low'));
      expect(k.symbols.byAddress(addr)?.name).toBe('asm_exc_divide_error');
    }
    const prb = await k.global('prb');
    expect(prb.layout.name).toBe('printk_ringbuffer');
    expect(prb.va).toBe(k.symbol('printk_rb_static'));
    expect(await k.globalValue('prb')).toBe(k.symbol('printk_rb_static'));
  });

  it('per-CPU: each possible CPU runs a known task or its idle task', async () => {
    const n = await k.cpuCount();
    expect(n).toBeGreaterThanOrEqual(1);
    const possible = await k.possibleCpus();
    expect(possible).toEqual(Array.from({ length: target.smp }, (_, i) => i));
    expect(await k.onlineCpus()).toEqual(possible);
    const pids = new Set(truth.ps.map((p) => p.pid));
    const T = k.layout('task_struct', ['pid', 'comm']);
    for (const cpu of possible) {
      const cur = await k.currentTask(cpu);
      const t = await k.read(cur, T);
      const ok = t.str('comm') === `swapper/${cpu}` || pids.has(t.int('pid') as number);
      expect(ok, `cpu ${cpu}: ${t.int('pid')} ${t.str('comm')}`).toBe(true);
      const rq = await k.percpu('runqueues', cpu, k.layout('rq', ['cpu', 'curr']));
      expect(rq.int('cpu')).toBe(cpu);
    }
  });
});

function row(t: StructView): Row {
  return {
    pid: t.num('tgid'),
    ppid: t.num('real_parent.tgid'),
    uid: t.u32('cred.uid'),
    gid: t.u32('cred.gid'),
    comm: t.str('comm'),
  };
}
