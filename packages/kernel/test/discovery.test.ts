import { describe, expect, it } from 'vitest';
import { BufferMemory } from '@pmi/core';
import { buildKallsymsTables, discoverKernel, PageTableBuilder, syntheticSymbols } from '../src/index.js';

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('discovery on memory that holds no kernel', () => {
  it.each([
    ['zeros', () => new Uint8Array(32 << 20)],
    [
      'random bytes',
      () => {
        const r = seeded(7);
        const b = new Uint8Array(32 << 20);
        for (let i = 0; i < b.length; i += 4) {
          const v = (r() * 2 ** 32) >>> 0;
          b[i] = v;
          b[i + 1] = v >>> 8;
          b[i + 2] = v >>> 16;
          b[i + 3] = v >>> 24;
        }
        return b;
      },
    ],
    [
      'digit runs and BTF magic planted in noise',
      () => {
        const b = new Uint8Array(16 << 20);
        const digits = Buffer.from('0\u00001\u00002\u00003\u00004\u00005\u00006\u00007\u00008\u00009\u0000', 'latin1');
        for (let at = 4096; at < b.length - 64; at += 1 << 20) {
          b.set(digits, at);
          b.set([0x9f, 0xeb, 0x01, 0x00, 0x18, 0, 0, 0], at + 512);
        }
        return b;
      },
    ],
  ])('%s → E_NOT_FOUND naming the symbols stage, quickly', async (_name, make) => {
    const mem = new BufferMemory([{ start: 0, bytes: make() }]);
    const t0 = performance.now();
    const err = await discoverKernel(mem).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_NOT_FOUND', data: { stage: 'symbols' } });
    expect((err as Error).message).toMatch(/symbols/);
    expect(performance.now() - t0).toBeLessThan(20_000); // bounded, not a hang (typically well under 1 s)
  });
});

/**
 * A kernel built with CONFIG_PHYSICAL_START=0x2000000 (link-time _text 0xffffffff82000000, not the
 * default 0xffffffff81000000), loaded with a KASLR slide: kallsyms + page tables + banner +
 * VMCOREINFO, all synthetic. Discovery must take the slide from the kernel's own VMCOREINFO
 * (KERNELOFFSET), not from a link-time base it assumed.
 */
describe('discovery of a kernel linked at a non-default base', () => {
  const START_KERNEL_MAP = 0xffffffff80000000n;
  const LINK_TEXT = START_KERNEL_MAP + 0x2000000n;
  const SLIDE = 0x1e00000n;
  const TEXT_VA = LINK_TEXT + SLIDE;
  const TEXT_PA = 0x2400000; // 2 MiB aligned, like every physical KASLR choice
  const PAGE_OFFSET = 0xffff9a4b00000000n; // 4-level direct map (randomized like RANDOMIZE_MEMORY)
  const BANNER = 'Linux version 9.9.9-synthetic (pmi@test) #1 SMP\n';

  function build(withVmcoreinfo: boolean) {
    const b = new PageTableBuilder({ levels: 4, ramSize: 64 << 20 });
    // the image mapping reaches the page tables at the top of RAM (init_top_pgt is inside the image)
    b.map(TEXT_VA, TEXT_PA, (64 << 20) - TEXT_PA, { pageSize: '2M' });
    b.map(PAGE_OFFSET, 0, 64 << 20, { pageSize: '2M' });
    const va = (pa: number) => TEXT_VA + BigInt(pa - TEXT_PA);
    // image layout (physical): banner, vmcoreinfo_data pointer, kallsyms tables
    const bannerPa = TEXT_PA + 0x200000;
    const ptrPa = TEXT_PA + 0x201000;
    const noteStoragePa = 0x500000; // a page of "kernel heap" (direct map), as vmcoreinfo_data points to
    const symbols = syntheticSymbols(99, 3000, { text: TEXT_VA, padding: true }).filter(
      (s) => s.address < va(bannerPa),
    );
    symbols.push(
      { name: 'linux_banner', type: 'R', address: va(bannerPa) },
      { name: 'vmcoreinfo_data', type: 'D', address: va(ptrPa) },
      { name: 'init_top_pgt', type: 'D', address: va(b.dtb) },
    );
    const tables = buildKallsymsTables(symbols, { layout: 'tokens-first', absolutePercpu: false });
    b.write(TEXT_PA + 0x300000, tables.bytes);
    b.write(bannerPa, Buffer.from(BANNER + '\0', 'latin1'));
    if (withVmcoreinfo) {
      const dv = new DataView(new ArrayBuffer(8));
      dv.setBigUint64(0, PAGE_OFFSET + BigInt(noteStoragePa), true);
      b.write(ptrPa, new Uint8Array(dv.buffer));
      const text = `OSRELEASE=9.9.9-synthetic\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=${va(b.dtb).toString(16)}\nKERNELOFFSET=${SLIDE.toString(16)}\n`;
      b.write(noteStoragePa, Buffer.from(text + '\0', 'latin1'));
    }
    return b.memory();
  }

  it('takes the KASLR slide from VMCOREINFO KERNELOFFSET: link-time _text 0xffffffff82000000', async () => {
    const k = await discoverKernel(build(true), { noTypes: true });
    expect(k.facts.textVirt).toBe(TEXT_VA);
    expect(k.facts.textPhys).toBe(TEXT_PA);
    expect(BigInt.asUintN(64, BigInt(k.facts.physBase))).toBe(
      BigInt.asUintN(64, BigInt(TEXT_PA) - (TEXT_VA - START_KERNEL_MAP)),
    );
    expect(k.facts.kaslrSlide).toBe(SLIDE);
    expect(k.facts.linkText).toBe(LINK_TEXT);
    expect(k.facts.kaslrSource).toBe('vmcoreinfo');
    expect(k.facts.release).toBe('9.9.9-synthetic');
    expect(k.facts.steps.find((s) => s.stage === 'kaslr')?.method).toMatch(/KERNELOFFSET/);
  });

  it('without VMCOREINFO it says the slide is against an assumed base (phys_base and translation stay right)', async () => {
    const k = await discoverKernel(build(false), { noTypes: true });
    expect(k.facts.textPhys).toBe(TEXT_PA);
    expect(await k.paging.translate(TEXT_VA + 0x1234n)).toBe(TEXT_PA + 0x1234);
    expect(k.facts.kaslrSource).toBe('assumed');
    expect(k.facts.kaslrSlide).toBe(TEXT_VA - 0xffffffff81000000n);
    expect(k.facts.warnings.join('\n')).toMatch(/no VMCOREINFO KERNELOFFSET/);
  });
});
