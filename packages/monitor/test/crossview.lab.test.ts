/**
 * The cross-view checks (hidden_processes, credentials, hidden_modules) on real guests:
 * - the clean snapshot: zero findings and zero warnings from all three; per-check timings logged;
 * - the views agree with the guest's own truth: ps pids and thread ids ⊆ the pid IDR, the IDR's tasks
 *   = the task list's, lsmod = the modules list = module_kset (mod != NULL) = the module-space scan,
 *   the non-root tasks of the credentials state = the truth's uids;
 * - copies of the snapshot tampered with like a rootkit does (a task unlinked from the task list,
 *   a cred edited in place, a module unlinked from the modules list) and deeper (a task on
 *   init_cred, a cred moved out of cred_jar, a module unlinked from sysfs too): each check reports
 *   exactly what was done, with and without the clean pass as baseline;
 * - baseline events: a module missing from / extra in the baseline is module_loaded / unloaded;
 * - the live guest while it forks and exits processes all the time: no tampering.
 */
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { discoverKernel, KernelObjects, type DiscoveredKernel, type DiscoveryHints } from '@pmi/kernel';
import { openLabVm, resolveKernel, WORKLOAD, type GroundTruth } from '@pmi/lab';
import { pidIdrTasks, walkTasks } from '@pmi/linux';
import {
  credentialsCheck,
  hiddenModulesCheck,
  hiddenProcessesCheck,
  type Check,
  type CheckOutcome,
  type CredentialsState,
  type HiddenProcessesState,
  type ModulesState,
} from '../src/index.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-crossview-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const CHECKS = [hiddenProcessesCheck, credentialsCheck, hiddenModulesCheck] as const;

interface Opened {
  mem: PhysicalMemory;
  d: DiscoveredKernel;
  k: KernelObjects;
}

async function open(uri: string, hints?: DiscoveryHints): Promise<Opened> {
  const mem = await openSource(uri);
  try {
    const d = await discoverKernel(mem, { hints });
    return { mem, d, k: KernelObjects.from(d) };
  } catch (e) {
    await mem.close();
    throw e;
  }
}

const runCheck = (c: Check, o: Opened, baseline?: unknown): Promise<CheckOutcome> =>
  c.run({ d: o.d, k: o.k, mem: o.mem }, baseline);

const tampering = (r: CheckOutcome) => r.findings.filter((f) => f.kind === 'tampering');

/** Writes into a copy of a snapshot at kernel virtual addresses (raw image: file offset = physical address). */
class Patcher {
  private readonly fd: number;
  constructor(
    private readonly k: KernelObjects,
    path: string,
  ) {
    this.fd = openSync(path, 'r+');
  }
  async bytes(va: bigint, b: Uint8Array): Promise<void> {
    for (let i = 0; i < b.length;) {
      const n = Math.min(b.length - i, 4096 - Number((va + BigInt(i)) & 0xfffn));
      writeSync(this.fd, b, i, n, await this.k.paging.translate(va + BigInt(i)));
      i += n;
    }
  }
  async u64(va: bigint, v: bigint): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    await this.bytes(va, b);
  }
  async u32(va: bigint, v: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    await this.bytes(va, b);
  }
  /** list_del_init(node) as a rootkit does it: neighbours skip the node, the node points at itself. */
  async unlink(node: bigint, init = true): Promise<void> {
    const next = await this.k.readPointer(node);
    const prev = await this.k.readPointer(node + 8n);
    await this.u64(prev, next);
    await this.u64(next + 8n, prev);
    if (init) {
      await this.u64(node, node);
      await this.u64(node + 8n, node);
    }
  }
  close(): void {
    closeSync(this.fd);
  }
}

describe.each(targets.map((t) => [t.id, t] as const))('cross-view checks, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let snap: Opened;
  const clean = new Map<string, CheckOutcome>();
  /** Processes of the snapshot by comm (leaders): task address and fields the tampering needs. */
  const procs = new Map<string, { va: bigint; pid: number; realCred: bigint; stack: bigint; tasks: bigint }>();
  let otherModule: string;

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    snap = await open('raw:' + target.snapshot_path);
    for await (const chunk of walkTasks(snap.k, { fields: ['real_cred', 'stack'] }))
      for (const t of chunk)
        procs.set(t.str('comm'), {
          va: t.va,
          pid: t.num('pid'),
          realCred: t.ptr('real_cred'),
          stack: t.ptr('stack'),
          tasks: t.addressOf('tasks'),
        });
    otherModule = resolveKernel(target.kernel).workloadModules.find((m) => m !== 'dummy')!;
  });
  afterAll(async () => {
    await snap?.mem.close();
  });

  it('the clean snapshot: no findings and no warnings from any check; timings', async () => {
    const times: string[] = [];
    for (const c of CHECKS) {
      const r = await runCheck(c, snap);
      const warm = await runCheck(c, snap); // the same snapshot: the same outcome, warm
      expect({ ...warm, ms: 0 }).toEqual({ ...r, ms: 0 });
      clean.set(c.id, r);
      times.push(`${c.id} ${r.ms.toFixed(0)}/${warm.ms.toFixed(0)} ms`);
      expect(r.check).toBe(c.id);
      expect(r.findings, c.id).toEqual([]);
      expect(r.warnings, c.id).toEqual([]);
      expect(r.partial, c.id).toBe(false);
      expect(JSON.parse(JSON.stringify(r.state))).toEqual(r.state); // JSON, as a baseline must be
    }
    const p = clean.get('hidden_processes')!.state as HiddenProcessesState;
    const m = clean.get('hidden_modules')!.state as ModulesState;
    process.stderr.write(
      `[crossview] ${target.id} (${target.release}): cold/warm ${times.join(', ')}; ` +
        `tasks listed ${p.listed} / pid IDR ${p.pid_idr} / cpus ${p.cpus} (CFS queued ${p.cfs_queued}), modules ${m.modules.length}\n`,
    );
  });

  it('the views agree with the guest: ps ⊆ pid IDR = task list; lsmod = modules list = module_kset = scan; uids', async () => {
    // pid IDR vs task list, exactly (a paused snapshot)
    const idr = await pidIdrTasks(snap.k);
    expect(idr.partial).toBe(false);
    expect(idr.warnings).toEqual([]);
    const listed = new Map<bigint, number>();
    for await (const chunk of walkTasks(snap.k, { threads: true }))
      for (const t of chunk) listed.set(t.va, t.num('pid'));
    expect(new Map(idr.tasks.map((t) => [t.task, t.nr]))).toEqual(listed);
    // ps and every thread id of the truth are in the IDR (but processes that came and went in between)
    const loops = new Set(
      truth.ps.filter((p) => p.comm.startsWith('pmi-') || p.comm === 'cmdloop.sh').map((p) => p.pid),
    );
    const churn = (pid: number, ppid: number, comm: string) =>
      loops.has(ppid) || pid === truth.collector_pid || ppid === truth.collector_pid || comm.startsWith('kworker');
    const stable = truth.ps.filter((p) => !churn(p.pid, p.ppid, p.comm));
    const nrs = new Set(idr.tasks.map((t) => t.nr));
    expect(stable.filter((p) => !nrs.has(p.pid)).map((p) => `${p.pid}:${p.comm}`)).toEqual([]);
    const stablePids = new Set(stable.map((p) => p.pid));
    const tids = truth.threads.filter((t) => stablePids.has(t.pid));
    expect(tids.filter((t) => !nrs.has(t.tid)).map((t) => `${t.tid}:${t.comm}`)).toEqual([]);
    expect(tids.length).toBeGreaterThan(stable.length); // pmi-threads' workers are there
    // modules: every view has exactly lsmod's modules
    const m = clean.get('hidden_modules')!.state as ModulesState;
    expect(m.modules.map((x) => x.name).sort()).toEqual(truth.modules.map((x) => x.name).sort());
    for (const x of m.modules) expect(x.views, x.name).toEqual(['list', 'kset', 'scan']);
    // credentials: the non-root tasks are the truth's non-root processes, with their uid
    const c = clean.get('credentials')!.state as CredentialsState;
    const nonroot = new Map(Object.entries(c.nonroot).map(([k, v]) => [Number(k.split(':')[0]), v[0]]));
    const user = truth.ps.find((p) => p.comm === WORKLOAD.userSleeper.comm)!;
    expect(nonroot.get(user.pid)).toBe(WORKLOAD.userSleeper.uid);
    for (const p of stable) if (p.uid !== 0) expect(nonroot.get(p.pid), `${p.pid}:${p.comm}`).toBe(p.uid);
    for (const [pid] of nonroot) {
      const p = truth.ps.find((x) => x.pid === pid);
      if (p) expect(p.uid, `${pid}:${p.comm}`).not.toBe(0);
    }
  });

  it('a rootkit-like copy: a process unlinked, a cred edited in place, a module unlinked → exactly those', async () => {
    const sleeper = procs.get(WORKLOAD.sleeper.comm)!;
    const user = procs.get(WORKLOAD.userSleeper.comm)!;
    const M = snap.k.layout('module', ['name', 'list']);
    let mod: { va: bigint; list: bigint } | undefined;
    for await (const x of snap.k.walkList(snap.k.symbol('modules'), M, 'list'))
      if (x.str('name') === otherModule) mod = { va: x.va, list: x.addressOf('list') };
    expect(mod).toBeDefined();
    const copy = join(scratch, `${target.name}.rootkit.ram`);
    copyFileSync(target.snapshot_path, copy);
    const p = new Patcher(snap.k, copy);
    try {
      await p.unlink(sleeper.tasks);
      for (const f of ['uid', 'euid', 'suid', 'fsuid', 'gid', 'egid', 'sgid', 'fsgid'])
        await p.u32(user.realCred + BigInt(snap.k.btf.fieldOffset('cred', f)), 0);
      await p.unlink(mod!.list);
    } finally {
      p.close();
    }
    const bad = await open('raw:' + copy, snap.d.facts.hints);
    try {
      const procsR = await runCheck(hiddenProcessesCheck, bad);
      expect(procsR.warnings).toEqual([]);
      expect(procsR.findings.map((f) => [f.kind, f.severity, f.address])).toEqual([
        ['tampering', 'high', '0x' + sleeper.va.toString(16).padStart(16, '0')],
      ]);
      expect(procsR.findings[0].evidence).toContain(`pid ${sleeper.pid} (${WORKLOAD.sleeper.comm})`);
      expect(procsR.findings[0].evidence).toContain('the pid IDR');
      const base = clean.get('credentials')!.state;
      for (const baseline of [undefined, base]) {
        const credR = await runCheck(credentialsCheck, bad, baseline);
        expect(credR.warnings).toEqual([]);
        expect(credR.findings.map((f) => [f.kind, f.key.split(':').slice(0, 2).join(':')])).toEqual([
          ['tampering', `cred_elevated:${user.pid}`],
        ]);
        expect(credR.findings[0].evidence).toMatch(/user_struct is uid 1000: the cred was edited in place/);
        if (baseline) expect(credR.findings[0].evidence).toMatch(/was uid 1000 .* in the baseline/);
      }
      for (const baseline of [undefined, clean.get('hidden_modules')!.state]) {
        const modR = await runCheck(hiddenModulesCheck, bad, baseline);
        expect(modR.warnings).toEqual([]);
        expect(modR.findings.map((f) => [f.kind, f.severity, f.key])).toEqual([
          ['tampering', 'critical', `hidden_module:${otherModule}@0x${mod!.va.toString(16)}`],
        ]);
        expect(modR.findings[0].evidence).toMatch(
          /list links self \(list_del_init\)\) is seen by sysfs \(module_kset\) and a scan of module space/,
        );
      }
      const times = [procsR, await runCheck(credentialsCheck, bad), await runCheck(hiddenModulesCheck, bad)]
        .map((r) => `${r.check} ${r.ms.toFixed(0)} ms`)
        .join(', ');
      process.stderr.write(`[crossview] ${target.id}: tampered copy (findings confirmed by a second read): ${times}\n`);
    } finally {
      await bad.mem.close();
      rmSync(copy, { force: true });
    }
  });

  it('deeper: a task on init_cred, a cred outside cred_jar, a module unlinked from sysfs too → exactly those', async () => {
    const user = procs.get(WORKLOAD.userSleeper.comm)!;
    const holder = procs.get(WORKLOAD.holder.comm)!;
    const k = snap.k;
    const M = k.layout('module', ['name', 'list', 'mkobj.kobj.entry']);
    let mod: { va: bigint; list: bigint; entry: bigint } | undefined;
    for await (const x of k.walkList(k.symbol('modules'), M, 'list'))
      if (x.str('name') === 'dummy')
        mod = { va: x.va, list: x.addressOf('list'), entry: x.addressOf('mkobj.kobj.entry') };
    expect(mod).toBeDefined();
    const initCred = k.symbol('init_cred');
    // the holder's cred copied to the unused bottom of its own kernel stack (vmalloc'd, not a slab)
    const credSize = k.btf.sizeOf('cred');
    const moved = holder.stack + 2048n;
    const credBytes = await k.readBytes(holder.realCred, credSize);
    const copy = join(scratch, `${target.name}.deep.ram`);
    copyFileSync(target.snapshot_path, copy);
    const p = new Patcher(k, copy);
    const T = k.layout('task_struct', ['real_cred', 'cred']);
    try {
      await p.u64(user.va + BigInt(T.offsetOf('real_cred')), initCred);
      await p.u64(user.va + BigInt(T.offsetOf('cred')), initCred);
      await p.bytes(moved, credBytes);
      await p.u64(holder.va + BigInt(T.offsetOf('real_cred')), moved);
      await p.u64(holder.va + BigInt(T.offsetOf('cred')), moved);
      await p.unlink(mod!.list, false);
      await p.unlink(mod!.entry, false);
    } finally {
      p.close();
    }
    const bad = await open('raw:' + copy, snap.d.facts.hints);
    try {
      const procsR = await runCheck(hiddenProcessesCheck, bad);
      expect(procsR.findings).toEqual([]);
      const credR = await runCheck(credentialsCheck, bad);
      expect(credR.warnings).toEqual([]);
      const hx = (v: bigint) => '0x' + v.toString(16).padStart(16, '0');
      expect(credR.findings.map((f) => [f.kind, f.key]).sort()).toEqual(
        [
          ['tampering', `cred_place:${hx(moved)}`],
          ['tampering', `cred_shared:${hx(initCred)}`],
        ].sort(),
      );
      const shared = credR.findings.find((f) => f.key.startsWith('cred_shared'))!;
      expect(shared.evidence).toMatch(new RegExp(`^init_cred .*pid ${user.pid} \\(${WORKLOAD.userSleeper.comm}\\)`));
      const placed = credR.findings.find((f) => f.key.startsWith('cred_place'))!;
      expect(placed.evidence).toMatch(new RegExp(`of pid ${holder.pid} \\(pmi-holder\\) is outside the direct map`));
      const modR = await runCheck(hiddenModulesCheck, bad, clean.get('hidden_modules')!.state);
      expect(modR.warnings).toEqual([]);
      expect(modR.findings.map((f) => [f.kind, f.key])).toEqual([
        ['tampering', `hidden_module:dummy@0x${mod!.va.toString(16)}`],
      ]);
      expect(modR.findings[0].evidence).toMatch(/seen by a scan of module space but/);
      expect(modR.findings[0].evidence).toMatch(/list links dangling/);
    } finally {
      await bad.mem.close();
      rmSync(copy, { force: true });
    }
  });

  it('baseline events: a module the baseline lacks is module_loaded, one it has extra is module_unloaded', async () => {
    const base = clean.get('hidden_modules')!.state as ModulesState;
    const dummy = base.modules.find((m) => m.name === 'dummy')!;
    const doctored: ModulesState = {
      modules: [
        ...base.modules.filter((m) => m.name !== 'dummy'),
        { name: 'gone_mod', module: '0xffffffffc0ff0000', views: ['list', 'kset', 'scan'] },
      ],
    };
    const r = await runCheck(hiddenModulesCheck, snap, doctored);
    expect(r.findings.map((f) => [f.kind, f.key])).toEqual([
      ['event', `module_loaded:dummy@${dummy.module}`],
      ['event', 'module_unloaded:gone_mod@0xffffffffc0ff0000'],
    ]);
  });

  it('the live guest forking and reaping processes all the time: no tampering from any check', async () => {
    const vm = openLabVm(target.name);
    const churn = `busybox timeout -s KILL 40 sh -c 'echo -n pmi-churn > /proc/$$/comm; while :; do ( : ); /bin/sleep 0 & wait; done' >/dev/null 2>&1 &`;
    const kill = `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = pmi-churn ] && kill -9 \${p#/proc/}; done; true`;
    const live = await open(target.source_uri, snap.d.facts.hints);
    const log: string[] = [];
    try {
      await vm.run(churn + '\nsleep 1', { timeoutMs: 60_000 });
      const t0 = performance.now();
      let passes = 0;
      let raced = 0;
      while (performance.now() - t0 < 15_000 || passes < 2) {
        passes++;
        for (const c of CHECKS) {
          const r = await runCheck(c, live);
          expect(tampering(r), `${c.id} pass ${passes}: ${JSON.stringify(r.findings)}`).toEqual([]);
          if (c === hiddenProcessesCheck) raced += (r.state as HiddenProcessesState).raced;
          for (const w of [...r.warnings, ...r.findings.map((f) => `${f.kind}: ${f.evidence}`)])
            log.push(`${c.id}: ${w}`);
        }
      }
      process.stderr.write(
        `[crossview] ${target.id}: live under fork/exit churn: ${passes} passes of the 3 checks in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
          `${raced} hidden-task candidate(s) cleared by the second read, ${log.length} warning(s)${log.length ? ':\n  ' + log.slice(0, 10).join('\n  ') : ''}\n`,
      );
    } finally {
      await vm.run(kill, { timeoutMs: 60_000 }).catch(() => undefined);
      await live.mem.close();
    }
  });
});
