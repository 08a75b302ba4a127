/**
 * `--vmlinuz` on every lab kernel: a clean snapshot against the bzImage it booted has every
 * differing byte explained by a patch site (nothing flagged, no site kind left unexplained), and a
 * copy of the snapshot whose `__x64_sys_getppid` starts with a `jmp` elsewhere has exactly that
 * range flagged, with its symbol. Prints timings and memory of the cold comparison per kernel.
 */
import { copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources';
import { discoverKernel, KernelObjects, type DiscoveredKernel } from '@pmi/kernel';
import { compareWithVmlinuz, vmlinuzCheck, SITE_KINDS, type Vmlinux, type VmlinuzStats } from '../src/vmlinuz/index.js';
import type { CheckContext } from '../src/checks/types.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-vmlinuz-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function bootedVmlinuz(target: { state_path: string }): string {
  return (JSON.parse(readFileSync(target.state_path, 'utf8')) as { vmlinuz: string }).vmlinuz;
}

async function withKernel<T>(path: string, fn: (ctx: CheckContext, d: DiscoveredKernel) => Promise<T>): Promise<T> {
  const mem = await openSource('raw:' + path);
  try {
    const d = await discoverKernel(mem);
    return await fn({ d, k: KernelObjects.from(d), mem }, d);
  } finally {
    await mem.close();
  }
}

function report(id: string, s: VmlinuzStats, rssDeltaMB: number): void {
  const kinds = SITE_KINDS.filter((k) => s.kinds[k].entries > 0)
    .map((k) => `${k} ${s.kinds[k].explained}/${s.kinds[k].changed} of ${s.kinds[k].sites}`)
    .join(', ');
  const ms = s.ms;
  process.stderr.write(
    `[vmlinuz] ${id} ${s.release}: ${s.bzimage.compression} ${(s.bzimage.payloadBytes / 2 ** 20).toFixed(1)} MiB → ` +
      `${(s.bzimage.vmlinuxBytes / 2 ** 20).toFixed(1)} MiB; relocs 32:${s.relocations.rel32} inv32:${s.relocations.inv32} ` +
      `64:${s.relocations.rel64}; compared ${s.comparedBytes} bytes, ${s.diffBytes} differ in ${s.diffRuns} runs, ` +
      `flagged ${s.flagged.ranges} (${s.flagged.bytes} bytes); sites explained/changed of compared: ${kinds}; ` +
      `ms read ${ms.read.toFixed(0)} decompress ${ms.decompress.toFixed(0)} parse ${ms.parse.toFixed(0)} ` +
      `relocate ${ms.relocate.toFixed(0)} memRead ${ms.memRead.toFixed(0)} compare ${ms.compare.toFixed(0)} ` +
      `total ${ms.total.toFixed(0)}; rss ${s.memory.rssMB.toFixed(0)} MiB (+${rssDeltaMB.toFixed(0)}), image ${s.memory.imageMB.toFixed(0)} MiB\n`,
  );
}

describe.each(targets.map((t) => [t.id, t] as const))('vmlinuz on %s', (id, target) => {
  const vmlinuz = bootedVmlinuz(target);
  let image: Vmlinux | undefined;

  it('a clean snapshot: every differing byte is a patch site in a form the kernel writes', async () => {
    await withKernel(target.snapshot_path, async (ctx) => {
      global.gc?.();
      const rss0 = process.memoryUsage().rss;
      const out = await compareWithVmlinuz(ctx, vmlinuz); // cold: decompress + relocate + compare
      report(id, out.stats, (process.memoryUsage().rss - rss0) / 2 ** 20);
      const s = out.stats;
      expect(s.release).toBe(target.release);
      expect(s.flagged.list).toEqual([]);
      expect(out.findings).toEqual([]);
      for (const k of SITE_KINDS) expect(s.kinds[k].unexplained, k).toBe(0);
      expect(out.partial).toBe(false);
      // the boot really patched its text: relocation alone does not explain memory
      expect(s.diffBytes).toBeGreaterThan(10_000);
      expect(s.kinds.return_sites.explained + s.kinds.altinstructions.explained).toBeGreaterThan(1000);
      // what each kernel has (docs/monitor-vmlinuz.md): paravirt tables up to 6.1, IBT seal + call
      // sites from 6.2, runtime constants from 6.11, no inverse per-CPU relocations from 6.15
      const has = (k: keyof VmlinuzStats['kinds']) => s.kinds[k].entries > 0;
      const major = Number(/^(\d+)\./.exec(target.release)![1]);
      const minor = Number(/^\d+\.(\d+)/.exec(target.release)![1]);
      const v = major * 100 + minor;
      expect(has('parainstructions')).toBe(v <= 601);
      expect(has('ibt_endbr_seal')).toBe(v >= 602);
      expect(has('runtime_const')).toBe(v >= 611);
      expect(s.relocations.inv32 > 0).toBe(v < 615);
      // sites were judged against values read from memory, not only by shape
      expect(s.memoryValues.staticCallKeys).toBeGreaterThan(100);
      if (v <= 601) expect(s.memoryValues.pvOpsSlots).toBeGreaterThan(10);
      if (v >= 611) expect(s.memoryValues.runtimeConsts).toBeGreaterThan(0);
      expect(s.bzimage.compression).toBe({ 510: 'xz', 601: 'lz4' }[v] ?? 'zstd');
      image = out.image;
    });
  });

  it('a copy with __x64_sys_getppid patched to jmp elsewhere: exactly that range is flagged, with its symbol', async () => {
    const copy = join(scratch, `${target.name}.ram`);
    copyFileSync(target.snapshot_path, copy);
    try {
      // patch through the snapshot's own page tables
      const { va, patch } = await withKernel(target.snapshot_path, async (_ctx, d) => {
        const va = d.symbols.addressOf('__x64_sys_getppid');
        const to = d.symbols.addressOf('__x64_sys_getpid');
        const pa = await d.paging.translate(va);
        const patch = Buffer.alloc(5);
        patch[0] = 0xe9;
        patch.writeInt32LE(Number(to - (va + 5n)), 1);
        const fd = openSync(copy, 'r+');
        try {
          writeSync(fd, patch, 0, 5, pa);
        } finally {
          closeSync(fd);
        }
        return { va, patch };
      });
      await withKernel(copy, async (ctx) => {
        const check = vmlinuzCheck(vmlinuz, image ? { image } : {});
        expect(check.id).toBe('vmlinuz');
        const out = await check.run(ctx, undefined);
        expect(out.findings).toHaveLength(1);
        const f = out.findings[0];
        expect(f.check).toBe('vmlinuz');
        expect(f.kind).toBe('tampering');
        // getppid takes no arguments: __x64_, __ia32_ and __do_sys_getppid may share the address
        expect(f.symbol).toMatch(/^__(x64|ia32|do)_sys_getppid$/);
        expect(f.evidence).toContain('__x64_sys_getppid');
        expect(f.address).toBe('0x' + va.toString(16));
        // the memory side of the evidence is the patched jump (bytes equal to the file's are not part of the range)
        expect(patch.toString('hex').startsWith(f.new!)).toBe(true);
        expect(f.new!.length / 2).toBeGreaterThanOrEqual(1);
        expect(f.new!.length / 2).toBeLessThanOrEqual(5);
        process.stderr.write(`[vmlinuz] ${id} tampered: ${f.evidence}\n`);
      });
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
