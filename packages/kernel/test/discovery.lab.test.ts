/**
 * Issue-4 acceptance: what pmi finds from memory alone equals what the guest itself says
 * (its /proc/kallsyms, uname, paging mode), over raw:, qemu: (live), elf: (QEMU's own dump)
 * and nettlp:// (the software adapter serving the snapshot).
 */
import { readFileSync, rmSync, statSync, mkdtempSync, copyFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { startAdapter } from '@pmi/nettlp';
import { openLabVm, type GroundTruth } from '@pmi/lab';
import { discoverKernel, type DiscoveredKernel } from '../src/index.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-discovery-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The x86 boot protocol's pref_address (setup header offset 0x258, protocol ≥ 2.10): LOAD_PHYSICAL_ADDR. */
function bzImagePrefAddress(bz: Buffer): bigint {
  if (bz.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new Error('not a bzImage (no HdrS)');
  if (bz.readUInt16LE(0x206) < 0x20a) throw new Error('boot protocol < 2.10: no pref_address');
  return bz.readBigUInt64LE(0x258);
}

async function discoverUri(uri: string): Promise<DiscoveredKernel> {
  const mem = await openSource(uri);
  try {
    return await discoverKernel(mem);
  } finally {
    await mem.close();
  }
}

function essentials(k: DiscoveredKernel) {
  const f = k.facts;
  return {
    release: f.release,
    levels: f.levels,
    dtb: f.dtb,
    slide: f.kaslrSlide,
    physBase: f.physBase,
    pageOffsetBase: f.pageOffsetBase,
    symbols: f.symbolCount,
    btfTypes: f.btfTypes,
  };
}

describe.each(targets.map((t) => [t.id, t] as const))('discovery on %s', (_id, target) => {
  const truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
  let fromSnapshot: DiscoveredKernel;

  it('finds release, paging mode, KASLR and every core symbol of /proc/kallsyms (raw: snapshot)', async () => {
    const snapshot = await openSource('raw:' + target.snapshot_path);
    try {
      fromSnapshot = await discoverKernel(snapshot);
      // How each stage found its facts on this kernel (the closing notes quote these lines).
      process.stderr.write(
        `[discovery] ${target.id} ${fromSnapshot.facts.release}: ` +
          fromSnapshot.facts.steps.map((st) => `${st.stage} ${st.ms} ms: ${st.method}`).join(' | ') +
          '\n',
      );
      await checkAgainstTruth(fromSnapshot);
    } finally {
      await snapshot.close();
    }
  });

  async function checkAgainstTruth(k: DiscoveredKernel): Promise<void> {
    const f = k.facts;
    expect(f.release).toBe(truth.uname_r);
    expect(f.banner).toBe(truth.version.trim());
    expect(f.levels).toBe(target.paging);
    expect(f.symbolSource).toBe('memory');
    expect(f.btfSource).toBe('memory');

    const core = truth.kallsyms.filter((s) => s.module === undefined);
    expect(f.symbolCount).toBe(core.length);
    const mem = k.symbols;
    let mismatches = 0;
    const examples: string[] = [];
    for (const s of core) {
      const hits = mem.lookup(s.name);
      if (!hits.some((h) => h.address === BigInt(s.address))) {
        mismatches++;
        if (examples.length < 5) examples.push(`${s.name}@${s.address}`);
      }
    }
    expect(examples, `symbols whose address differs from /proc/kallsyms`).toEqual([]);
    expect(mismatches).toBe(0);
    for (const name of ['_text', 'init_task', 'sys_call_table', 'init_top_pgt', 'modules', 'prb', 'page_offset_base']) {
      const want = core.find((s) => s.name === name);
      expect(want, name).toBeDefined();
      expect('0x' + mem.addressOf(name).toString(16)).toBe(want!.address);
    }
    // The link-time _text comes from the booted bzImage itself (its setup header's pref_address is
    // LOAD_PHYSICAL_ADDR), independent of what pmi read; the slide is the guest's _text minus it.
    const text = BigInt(core.find((s) => s.name === '_text')!.address);
    const vmlinuz = (JSON.parse(readFileSync(target.state_path, 'utf8')) as { vmlinuz: string }).vmlinuz;
    const linkText = 0xffffffff80000000n + bzImagePrefAddress(readFileSync(vmlinuz));
    expect(f.linkText).toBe(linkText);
    expect(f.kaslrSlide).toBe(text - linkText);
    expect(f.kaslrSource).toBe('vmcoreinfo');
    // The page tables pmi found translate _text to the guest's own "Kernel code" start (/proc/iomem).
    const code = truth.iomem?.find((r) => r.name === 'Kernel code');
    if (code) expect(f.textPhys).toBe(Number(BigInt(code.start)));
    // The memory map read from iomem_resource: the guest's own top-level "System RAM" lines.
    const sysRam = truth.iomem
      .filter((r) => r.depth === 0 && r.name === 'System RAM')
      .map((r) => ({ start: Number(BigInt(r.start)), end: Number(BigInt(r.end)) + 1 }));
    expect(sysRam.length).toBeGreaterThan(0);
    expect(f.ram).toEqual(sysRam);
    // linux_banner read through the discovered kernel page table is the guest's banner.
    const banner = await k.paging.readVirtual(mem.addressOf('linux_banner'), 14);
    expect(Buffer.from(banner).toString('latin1')).toBe('Linux version ');
  }

  it('gives the same results on the live RAM file (qemu:)', async () => {
    expect(essentials(await discoverUri(target.source_uri))).toEqual(essentials(fromSnapshot));
  });

  it("gives the same results on QEMU's own ELF dump (elf:)", async () => {
    const vm = await openLabVm(target.name);
    const path = join(scratch, `${target.name}.elf`);
    await vm.dumpGuestMemory(path);
    try {
      expect(essentials(await discoverUri('elf:' + path))).toEqual(essentials(fromSnapshot));
    } finally {
      rmSync(path, { force: true });
    }
  });

  it('gives the same results over NetTLP (software adapter serving the snapshot)', async () => {
    const source = await openSource('raw:' + target.snapshot_path);
    const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
    const adapter = await startAdapter({ source, listen: '127.0.0.2', portBase, tags: 32 });
    try {
      const size = statSync(target.snapshot_path).size;
      const t0 = performance.now();
      const k = await discoverUri(`nettlp://127.0.0.2:${portBase}?tags=32&mrrs=4096&ranges=0+${size}`);
      const ms = performance.now() - t0;
      console.log(
        `[${target.id}] discovery over nettlp:// ${ms.toFixed(0)} ms (raw: ${fromSnapshot.facts.totalMs} ms)`,
      );
      expect(essentials(k)).toEqual(essentials(fromSnapshot));
      // Warm: the hints of an earlier discovery (where kallsyms and BTF sat) skip the scans, and are validated.
      const t1 = performance.now();
      const mem = await openSource(`nettlp://127.0.0.2:${portBase}?tags=32&mrrs=4096&ranges=0+${size}`);
      try {
        const warm = await discoverKernel(mem, { hints: fromSnapshot.facts.hints });
        console.log(`[${target.id}] warm discovery over nettlp:// ${(performance.now() - t1).toFixed(0)} ms`);
        expect(essentials(warm)).toEqual(essentials(fromSnapshot));
        expect(warm.facts.warnings).toEqual([]);
      } finally {
        await mem.close();
      }
    } finally {
      await adapter.close();
      await source.close();
    }
  });

  it('over NetTLP with probed ranges, discovery narrows the source to the System RAM of /proc/iomem', async () => {
    const source = await openSource('raw:' + target.snapshot_path);
    const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
    const adapter = await startAdapter({ source, listen: '127.0.0.2', portBase, tags: 16 });
    try {
      const mem = await openSource(`nettlp://127.0.0.2:${portBase}?tags=16&mrrs=4096`); // loopback: probed
      try {
        const probed = mem.info.ranges.map((r) => ({ ...r }));
        // The legacy VGA window (0xa0000) is inside the probed span, but it is not RAM.
        expect(probed[0].start).toBe(0);
        expect(probed[0].end).toBeGreaterThan(0x100000);
        expect(await mem.readBatch([{ addr: 0xa0000, buf: new Uint8Array(16) }])).toEqual([]);
        const k = await discoverKernel(mem);
        expect(k.facts.ramAdopted).toBe(true);
        const sysRam = truth.iomem
          .filter((r) => r.depth === 0 && r.name === 'System RAM')
          .map((r) => ({ start: Number(BigInt(r.start)), end: Number(BigInt(r.end)) + 1 }))
          .map((r) => ({ start: r.start, end: Math.min(r.end, probed.at(-1)!.end) }))
          .filter((r) => r.start < r.end);
        expect(mem.info.ranges).toEqual(sysRam);
        const [f] = await mem.readBatch([{ addr: 0xa0000, buf: new Uint8Array(16) }]);
        expect(f.error.code).toBe('E_OUT_OF_RANGE');
        expect(essentials(k)).toEqual(essentials(fromSnapshot));
      } finally {
        await mem.close();
      }
      // Ranges given by the user are theirs: discovery reports the map but does not narrow them.
      const size = statSync(target.snapshot_path).size;
      const given = await openSource(`nettlp://127.0.0.2:${portBase}?tags=16&mrrs=4096&ranges=0+${size}`);
      try {
        const k = await discoverKernel(given);
        expect(k.facts.ramAdopted).toBe(false);
        expect(given.info.ranges).toEqual([{ start: 0, end: size }]);
      } finally {
        await given.close();
      }
    } finally {
      await adapter.close();
      await source.close();
    }
  });

  it('live guest over NetTLP: kernel text read through the adapter equals the live RAM file', async () => {
    // The adapter serves the *running* guest's RAM (qemu: source); kernel text does not change.
    const live = await openSource(target.source_uri);
    const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
    const adapter = await startAdapter({ source: live, listen: '127.0.0.2', portBase, tags: 16 });
    const end = live.info.ranges.at(-1)!.end;
    const remote = await openSource(`nettlp://127.0.0.2:${portBase}?tags=16&mrrs=512&ranges=0+${end}`);
    try {
      const f = fromSnapshot.facts;
      const textLen = 4 << 20;
      const viaNettlp = new Uint8Array(textLen);
      const viaFile = new Uint8Array(textLen);
      expect(await remote.readBatch([{ addr: f.textPhys, buf: viaNettlp }])).toEqual([]);
      expect(await live.readBatch([{ addr: f.textPhys, buf: viaFile }])).toEqual([]);
      expect(Buffer.compare(viaNettlp, viaFile)).toBe(0);
      // and it is the kernel's text: _text's first bytes as the snapshot holds them
      const snap = await openSource('raw:' + target.snapshot_path);
      const first = new Uint8Array(64);
      await snap.readBatch([{ addr: f.textPhys, buf: first }]);
      await snap.close();
      expect(Buffer.compare(viaNettlp.subarray(0, 64), first)).toBe(0);
    } finally {
      await remote.close();
      await adapter.close();
      await live.close();
    }
  });

  it('bad memory: zeroed kallsyms, truncated image — typed errors naming the stage, no hang', async () => {
    const tables = fromSnapshot.kallsyms!.layout.tables;
    const copy = join(scratch, `${target.name}.zeroed`);
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    writeSync(fd, Buffer.alloc(4096), 0, 4096, tables.tokenTable);
    closeSync(fd);
    await expect(discoverUri('raw:' + copy)).rejects.toMatchObject({ code: 'E_NOT_FOUND', data: { stage: 'symbols' } });
    rmSync(copy);

    // BTF header zeroed: symbols and paging still work, types fail naming their stage.
    const noBtf = join(scratch, `${target.name}.nobtf`);
    copyFileSync(target.snapshot_path, noBtf);
    const fd2 = openSync(noBtf, 'r+');
    writeSync(fd2, Buffer.alloc(4096), 0, 4096, fromSnapshot.facts.btfPhys!);
    closeSync(fd2);
    await expect(discoverUri('raw:' + noBtf)).rejects.toMatchObject({ code: 'E_NOT_FOUND', data: { stage: 'types' } });
    rmSync(noBtf);

    // The first 64 MiB only: the kernel image (loaded higher) is gone.
    const mem: PhysicalMemory = await openSource(`raw:${target.snapshot_path}?size=${64 << 20}`);
    try {
      await expect(discoverKernel(mem)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    } finally {
      await mem.close();
    }
  });
});
