/**
 * Process memory views against the guest's own /proc: the memory map (/proc/PID/maps), argv
 * (/proc/PID/cmdline) and environment (/proc/PID/environ) of every long-lived user process, read in
 * the guest right before a fresh snapshot; the VMA source each kernel must use (the maple tree
 * `mm->mm_mt` from 6.1, the `mm->mmap` list before); and a copy with a corrupted VMA source (a
 * cycle in the `vm_next` list, or a maple root pointing nowhere): a partial map, a warning, CLI
 * exit 3, no hang.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import '@pmi/sources';
import { openLabVm, type GroundTruth } from '@pmi/lab';
import { findTask, listMaps, processArgs, processEnv, vmaAddresses, type MapRow } from '../src/index.js';
import { openLabKernel, procMapsLine } from './lab-kernel.js';
import { releaseAtLeast } from './lab-expect.js';

const targets = inject('labTargets');
const PMI = fileURLToPath(new URL('../../cli/bin/pmi.js', import.meta.url));

const asProc = procMapsLine;
const parseProcMaps = (text: string): string[] =>
  text
    .trim()
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const f = l.trim().split(/\s+/);
      const [a, b] = f[0].split('-').map((x) => BigInt('0x' + x).toString(16));
      return [`${a}-${b}`, f[1], f[2], f[3], f[4], f.slice(5).join(' ')].join(' ');
    });
const lines = (text: string): string[] => text.split('\n').filter((l) => l.length > 0);

describe.each(targets.map((t) => [t.id, t] as const))('maps, cmdline and env, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let scratch: string;
  /** VMA source the kernel's history says it has. */
  let wantMethod: 'maple_tree' | 'mmap_list';
  beforeAll(() => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    scratch = mkdtempSync(join(tmpdir(), 'pmi-memory-'));
    wantMethod = releaseAtLeast(target.release, 6, 1) ? 'maple_tree' : 'mmap_list';
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  /**
   * The long-lived user processes of the boot truth: not kernel threads, not the children the
   * workload loops fork (sleep) nor the collector, nor the lab's `timeout` watchers of commands; not
   * the command loop either, which runs our command (its heap and children change while it does).
   */
  const stableProcesses = () => {
    const loops = new Set(
      truth.ps.filter((p) => p.comm.startsWith('pmi-') || p.comm === 'cmdloop.sh').map((p) => p.pid),
    );
    return truth.ps.filter(
      (p) =>
        !p.kernel_thread &&
        p.comm !== 'cmdloop.sh' &&
        p.comm !== 'timeout' &&
        !loops.has(p.ppid) &&
        p.pid !== truth.collector_pid &&
        p.ppid !== truth.collector_pid,
    );
  };

  it('every long-lived user process: maps, argv and environ equal /proc/PID/{maps,cmdline,environ}, VMAs from the source this kernel has', async () => {
    const procs = stableProcesses();
    expect(procs.length).toBeGreaterThanOrEqual(8);
    const vm = openLabVm(target.name);
    const script = procs
      .map(
        (p) =>
          `echo "@@P ${p.pid}"; cat /proc/${p.pid}/maps; echo "@@A"; tr '\\0' '\\n' < /proc/${p.pid}/cmdline; ` +
          `echo; echo "@@E"; tr '\\0' '\\n' < /proc/${p.pid}/environ; echo`,
      )
      .join('\n');
    const out = await vm.run(script);
    const snap = join(scratch, 'maps.ram');
    await vm.snapshot(snap);
    const { mem, k } = await openLabKernel('raw:' + snap, target);
    try {
      const byPid = new Map<number, { maps: string[]; argv: string[]; env: string[] }>();
      for (const part of out.stdout.split('@@P ').slice(1)) {
        const pid = Number(part.slice(0, part.indexOf('\n')));
        const body = part.slice(part.indexOf('\n') + 1);
        const [maps, rest] = body.split('@@A\n');
        const [argv, env] = rest.split('@@E\n');
        byPid.set(pid, { maps: parseProcMaps(maps), argv: lines(argv), env: lines(env) });
      }
      expect([...byPid.keys()].sort()).toEqual(procs.map((p) => p.pid).sort());
      const summary: string[] = [];
      for (const p of procs) {
        const want = byPid.get(p.pid)!;
        expect(want.maps.length, `pid ${p.pid} (${p.comm}) /proc maps`).toBeGreaterThan(3);
        const task = await findTask(k, p.pid);
        const m = await listMaps(k, task.ptr('mm'));
        expect([m.method, m.partial, m.warnings], `pid ${p.pid} (${p.comm})`).toEqual([wantMethod, false, []]);
        expect(m.rows.map(asProc), `pid ${p.pid} (${p.comm}) maps`).toEqual(want.maps);
        const argv = await processArgs(k, p.pid);
        expect([argv.strings, argv.error], `pid ${p.pid} (${p.comm}) argv`).toEqual([want.argv, undefined]);
        const env = await processEnv(k, p.pid);
        expect([env.strings, env.error], `pid ${p.pid} (${p.comm}) environ`).toEqual([want.env, undefined]);
        summary.push(`${p.pid}/${p.comm} ${m.rows.length} vmas`);
      }
      // a maple tree whose root is an internal node was walked, not only single-leaf trees: the process
      // with the most VMAs (the lab's multi-threaded helper, a stack per thread; VMAs and the gaps
      // between them take more than a leaf's 16 slots)
      const biggest = procs.reduce((a, b) => (byPid.get(b.pid)!.maps.length > byPid.get(a.pid)!.maps.length ? b : a));
      const nVmas = byPid.get(biggest.pid)!.maps.length;
      if (wantMethod === 'maple_tree') {
        const mm = (await findTask(k, biggest.pid)).ptr('mm');
        const root = (await k.read(mm, k.layout('mm_struct', ['mm_mt.ma_root']))).ptr('mm_mt.ma_root');
        const leaf = k.btf.enumValue('maple_type', 'maple_leaf_64');
        const type = (root >> 3n) & 0xfn;
        expect([root & 3n, type === BigInt(leaf)], `root of ${biggest.comm}'s tree`).toEqual([2n, false]);
        console.log(`[memory] ${target.id}: ${biggest.pid}/${biggest.comm} (${nVmas} VMAs) has an internal root node`);
      } else console.log(`[memory] ${target.id}: mmap list (no tree levels to cover); most VMAs ${nVmas}`);
      // something of each kind is named: a file, the heap or stack, the vdso (special mapping)
      const all = procs.map((p) => byPid.get(p.pid)!.maps.join('\n')).join('\n');
      for (const name of ['/bin/busybox', '[stack]', '[vdso]']) expect(all).toContain(name);
      console.log(`[memory] ${target.id}: ${wantMethod}; ${summary.join(', ')}`);
    } finally {
      await mem.close();
      rmSync(snap, { force: true });
    }
  });

  it('a corrupted VMA source in a copied image (vm_next cycle / maple root pointing nowhere): partial map, a warning, CLI exit 3, no hang', async () => {
    const holder = truth.ps.find((p) => p.comm === 'pmi-holder')!;
    expect(holder).toBeDefined();
    const { mem, k } = await openLabKernel('raw:' + target.snapshot_path, target);
    let patch: { phys: number; value: bigint };
    let good: MapRow[];
    try {
      const mm = (await findTask(k, holder.pid)).ptr('mm');
      const walk = await vmaAddresses(k, mm);
      expect(walk.method).toBe(wantMethod);
      good = (await listMaps(k, mm)).rows;
      expect(good.length).toBeGreaterThan(4);
      if (walk.method === 'mmap_list') {
        // the third VMA's vm_next points back at the first: a cycle after three VMAs
        const next = walk.vmas[2] + BigInt(k.btf.fieldOffset('vm_area_struct', 'vm_next'));
        patch = { phys: await k.paging.translate(next), value: walk.vmas[0] };
      } else {
        // the root becomes a leaf node (same type bits) at an address no page table maps
        const r = await k.read(mm, k.layout('mm_struct', ['mm_mt.ma_root']));
        const root = r.addressOf('mm_mt.ma_root');
        const old = r.ptr('mm_mt.ma_root');
        const pob = BigInt(await k.globalValue('page_offset_base'));
        patch = { phys: await k.paging.translate(root), value: (pob + (1n << 44n)) | (old & 0xffn) };
      }
    } finally {
      await mem.close();
    }
    const copy = join(scratch, 'badvma.ram');
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, patch.value));
    writeSync(fd, b, 0, 8, patch.phys);
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      try {
        const t0 = performance.now();
        const m = await listMaps(bad.k, (await findTask(bad.k, holder.pid)).ptr('mm'));
        expect(performance.now() - t0).toBeLessThan(30_000);
        expect(m.partial).toBe(true);
        if (wantMethod === 'mmap_list') {
          expect(m.warnings.join(' ')).toMatch(/mmap list of mm 0x[0-9a-f]+: .*cycle/);
          expect(m.rows).toEqual(good.slice(0, 3));
        } else {
          expect(m.warnings.join(' ')).toMatch(/maple node 0x[0-9a-f]+ of mm 0x[0-9a-f]+ unreadable/);
          expect(m.rows).toEqual([]);
        }
        console.log(`[memory] ${target.id}: corrupted ${wantMethod}: ${m.rows.length} rows, ${m.warnings.join('; ')}`);
      } finally {
        await bad.mem.close();
      }
      const cli = spawnSync(process.execPath, [PMI, '--json', '-s', 'raw:' + copy, 'maps', String(holder.pid)], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(cli.status, cli.stderr).toBe(3);
      const doc = JSON.parse(cli.stdout) as { rows: MapRow[]; warnings: string[] };
      expect(doc.rows.length).toBe(wantMethod === 'mmap_list' ? 3 : 0);
      expect(doc.warnings.length).toBeGreaterThan(0);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
