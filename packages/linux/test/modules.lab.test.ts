/**
 * lsmod and module symbols against the guest's own /proc/modules and /proc/kallsyms (truth recorded
 * inside the guest; taint letters from a fresh /proc/modules), over raw: (the snapshot) and nettlp://
 * (the software adapter serving it); the module memory layout each kernel must have (`mem[]` from
 * 6.4, `core_layout` before); a copy with a cyclic modules list gives partial rows, a warning and
 * exit 3. The workload modules differ per kernel (crc32_generic became crc32_cryptoapi).
 */
import { openLabKernel, openSnapshotOverNettlp } from './lab-kernel.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import type { KernelObjects } from '@pmi/kernel';
import { openLabVm, resolveKernel, type GroundTruth } from '@pmi/lab';
import { listModules, loadModuleSymbols, resolveModuleSymbol, type ModuleRow } from '../src/index.js';
import { releaseAtLeast } from './lab-expect.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-modules-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const PMI = join(__dirname, '../../cli/bin/pmi.js');

const hex = (v: bigint) => '0x' + v.toString(16);

function asProc(r: ModuleRow) {
  return {
    name: r.name,
    size: r.size,
    refcount: r.refcount,
    deps: r.deps,
    state: r.state,
    address: hex(r.base),
  };
}

describe.each(targets.map((t) => [t.id, t] as const))('lsmod and module symbols, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let mem: PhysicalMemory;
  let k: KernelObjects;

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    ({ mem, k } = await openLabKernel('raw:' + target.snapshot_path, target));
  });
  afterAll(async () => {
    await mem?.close();
  });

  it('lsmod equals /proc/modules: names, sizes, refcounts, used-by, state, addresses, taint', async () => {
    const t0 = performance.now();
    const r = await listModules(k);
    const ms = performance.now() - t0;
    process.stderr.write(
      `[modules] ${target.id}: ${r.rows.length} modules walked in ${ms.toFixed(1)} ms (${r.layout})\n`,
    );
    expect(r.warnings).toEqual([]);
    expect(r.error).toBeUndefined();
    expect(r.rows.map(asProc)).toEqual(truth.modules);
    for (const w of resolveKernel(target.kernel).workloadModules) expect(r.rows.map((m) => m.name)).toContain(w);
    // how /proc/modules computes size and address depends on the layout this kernel has
    expect(r.layout).toBe(releaseAtLeast(target.release, 6, 4) ? 'mem' : 'core_layout');
    for (const m of r.rows) expect(m.regions.map((g) => g.kind)).toContain(r.layout === 'mem' ? 'text' : 'core');
    // taint: what the guest's /proc/modules prints inside "(…)" (5.10 taints unsigned modules 'E')
    const proc = await openLabVm(target.name).run('cat /proc/modules');
    const taints = proc.stdout
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .map((l) => [l.split(' ')[0], /\(([A-Z+-]+)\)\s*$/.exec(l)?.[1] ?? '']);
    expect(taints.map(([n]) => n)).toEqual(truth.modules.map((m) => m.name));
    expect(r.rows.map((m) => [m.name, m.taint])).toEqual(taints);
    process.stderr.write(`[modules] ${target.id}: taints ${JSON.stringify(taints)}\n`);
  });

  it("every module symbol equals the guest's /proc/kallsyms [module] lines", async () => {
    const t0 = performance.now();
    const syms = await loadModuleSymbols(k);
    const ms = performance.now() - t0;
    process.stderr.write(`[modules] ${target.id}: ${syms.symbols.length} module symbols read in ${ms.toFixed(1)} ms\n`);
    expect(syms.warnings).toEqual([]);
    const line = (s: { module?: string | null; name: string; type: string; address: string }) =>
      `${s.address} ${s.type} ${s.name} [${s.module}]`;
    const want = truth.kallsyms.filter((s) => s.module).map(line);
    const got = syms.symbols.map((s) => line({ ...s, address: hex(s.address) }));
    expect(want.length).toBeGreaterThan(20);
    for (const w of resolveKernel(target.kernel).workloadModules)
      expect(got.some((g) => g.endsWith(`[${w}]`))).toBe(true);
    expect(got.sort()).toEqual(want.sort());

    // resolve and symbolize
    const xmit = truth.kallsyms.find((s) => s.name === 'dummy_xmit' && s.module === 'dummy')!;
    for (const spec of ['dummy:dummy_xmit', 'dummy_xmit']) {
      const hits = await resolveModuleSymbol(k, spec, syms);
      expect(hits.map((h) => ({ module: h.module, name: h.name, type: h.type, address: hex(h.address) }))).toEqual([
        { module: 'dummy', name: 'dummy_xmit', type: xmit.type, address: xmit.address },
      ]);
    }
    const [other] = resolveKernel(target.kernel).workloadModules.filter((m) => m !== 'dummy');
    expect(other).toBeDefined();
    expect(await resolveModuleSymbol(k, `${other}:dummy_xmit`, syms)).toEqual([]);
    expect(syms.format(BigInt(xmit.address) + 0x10n)).toBe('dummy_xmit+0x10 [dummy]');
    expect(syms.byAddress(k.symbol('schedule'))).toBeUndefined();
  });

  it('pmi sym resolves module:name and plain names found only in modules (CLI)', () => {
    // a function of the other workload module whose name occurs once in the guest's /proc/kallsyms
    const [other] = resolveKernel(target.kernel).workloadModules.filter((m) => m !== 'dummy');
    const count = new Map<string, number>();
    for (const s of truth.kallsyms) count.set(s.name, (count.get(s.name) ?? 0) + 1);
    const only = truth.kallsyms
      .filter((s) => s.module === other && s.type.toLowerCase() === 't' && count.get(s.name) === 1)
      .map((s) => s.name)
      .sort();
    expect(only.length, `functions only in ${other}`).toBeGreaterThan(0);
    const name = only[0];
    process.stderr.write(`[modules] ${target.id}: plain name only in a module: ${name} [${other}]\n`);
    const r = spawnSync(
      process.execPath,
      [PMI, '--source', 'raw:' + target.snapshot_path, '--json', 'sym', 'dummy:dummy_xmit', name, 'schedule'],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as {
      rows: { name: string; address: string; type: string; module: string | null }[];
    };
    const find = (name: string, module: string | null) =>
      truth.kallsyms
        .filter((s) => s.name === name && (s.module ?? null) === module)
        .map((s) => ({ name, address: s.address, type: s.type, module }));
    expect(doc.rows).toEqual([...find('dummy_xmit', 'dummy'), ...find(name, other), ...find('schedule', null)]);
    const u = spawnSync(process.execPath, [PMI, '--source', 'raw:' + target.snapshot_path, 'sym', 'dummy:nosuch'], {
      encoding: 'utf8',
    });
    expect(u.status).toBe(3);
    expect(u.stderr).toMatch(/unknown symbol: dummy:nosuch/);
  });

  it('the same modules and symbols over nettlp://', async () => {
    const remote = await openSnapshotOverNettlp(target);
    try {
      const t0 = performance.now();
      const r = await listModules(remote.k);
      const syms = await loadModuleSymbols(remote.k, { modules: r.rows });
      process.stderr.write(
        `[modules] ${target.id}: nettlp:// lsmod + ${syms.symbols.length} symbols in ${(performance.now() - t0).toFixed(0)} ms\n`,
      );
      expect(r.rows.map(asProc)).toEqual(truth.modules);
      const local = await loadModuleSymbols(k);
      expect(syms.symbols).toEqual(local.symbols);
    } finally {
      await remote.close();
    }
  });

  it('a cyclic modules list: partial rows, a warning, exit 3, no hang', async () => {
    const r = await listModules(k);
    expect(r.rows.length).toBeGreaterThanOrEqual(2);
    // the last module's list.next points back at the first module's node (a cycle not through the head)
    const M = k.layout('module', ['list']);
    const last = r.rows[r.rows.length - 1];
    const first = r.rows[0];
    const nextPa = await k.paging.translate(last.va + BigInt(M.offsetOf('list')));
    const target0 = first.va + BigInt(M.offsetOf('list'));
    const copy = join(scratch, `${target.name}-cyclic.raw`);
    execFileSync('cp', ['--sparse=always', target.snapshot_path, copy]);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(target0);
    const fd = openSync(copy, 'r+');
    writeSync(fd, b, 0, 8, nextPa);
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      const p = await listModules(bad.k);
      await bad.mem.close();
      expect(p.error).toBeDefined();
      expect(p.warnings.join(' ')).toMatch(/cycle/);
      expect(p.rows.map((m) => m.name)).toEqual(r.rows.map((m) => m.name));
      const cli = spawnSync(process.execPath, [PMI, '--source', 'raw:' + copy, '--json', 'lsmod'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(cli.status, cli.stderr).toBe(3);
      const doc = JSON.parse(cli.stdout) as { rows: { name: string }[]; warnings: string[] };
      expect(doc.rows.map((m) => m.name)).toEqual(r.rows.map((m) => m.name));
      expect(doc.warnings.join(' ')).toMatch(/cycle/);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
