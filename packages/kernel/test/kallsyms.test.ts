import { describe, expect, it } from 'vitest';
import { BufferMemory, PmiError } from '@pmi/core';
import {
  buildKallsymsImage,
  buildKallsymsTables,
  locateKallsyms,
  stripLlvmSuffix,
  syntheticSymbols,
  type KernelSymbols,
  type SynthLayout,
  type SynthSymbol,
} from '@pmi/kernel';

function expectSame(ks: KernelSymbols, want: readonly SynthSymbol[]): void {
  expect(ks.count).toBe(want.length);
  const bad: string[] = [];
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    if (ks.name(i) !== w.name || ks.type(i) !== w.type || ks.address(i) !== BigInt.asUintN(64, w.address)) {
      bad.push(
        `${i}: want ${w.type} ${w.name} ${w.address.toString(16)} got ${ks.type(i)} ${ks.name(i)} ${ks.addressHex(i)}`,
      );
    }
  }
  expect(bad.slice(0, 5)).toEqual([]);
}

const CASES: { layout: SynthLayout; percpu: boolean; kind: string; order: string; seqs: boolean }[] = [
  { layout: 'legacy-absolute', percpu: false, kind: 'absolute', order: 'addresses-first', seqs: false },
  { layout: 'offsets-first', percpu: true, kind: 'relative-percpu', order: 'addresses-first', seqs: false },
  { layout: 'offsets-first', percpu: false, kind: 'relative', order: 'addresses-first', seqs: false },
  { layout: 'offsets-first-seqs', percpu: true, kind: 'relative-percpu', order: 'addresses-first', seqs: true },
  { layout: 'offsets-first-seqs', percpu: false, kind: 'relative', order: 'addresses-first', seqs: true },
  { layout: 'tokens-first', percpu: true, kind: 'relative-percpu', order: 'tokens-first', seqs: true },
  { layout: 'tokens-first', percpu: false, kind: 'relative', order: 'tokens-first', seqs: true },
  { layout: 'self-relative', percpu: false, kind: 'self-relative', order: 'tokens-first', seqs: true },
];

describe('kallsyms synthetic layouts', () => {
  for (const c of CASES) {
    for (const n of [20, 200, 256, 257, 3000]) {
      it(`${c.layout}${c.percpu ? '+percpu' : ''} with ${n} symbols, embedded in noise with decoys`, async () => {
        const seed = n * 31 + c.layout.length;
        // legacy/absolute keeps 'A' symbols too (raw values); relative-without-percpu cannot hold them
        const withA = c.percpu || c.layout === 'legacy-absolute';
        const syms = syntheticSymbols(seed, Math.max(n, withA ? 6 : 2), {
          percpu: withA,
          text: 0xffffffff9a200000n + BigInt(seed % 64) * 0x200000n,
          // 6.2+ kernels have a __pfx_ symbol 16 bytes before each function; the self-relative VA − PA
          // search once matched them (every address 16 bytes high on the real 7.2 image).
          padding: c.layout === 'tokens-first' || c.layout === 'self-relative',
        }).slice(0, Math.max(n, withA ? 6 : 2));
        const img = buildKallsymsImage(syms, { layout: c.layout, absolutePercpu: c.percpu, seed, base: 0x100000 });
        const mem = new BufferMemory([{ start: img.base, bytes: img.bytes }]);
        const ks = await locateKallsyms(mem);
        expectSame(ks, img.tables.symbols);
        expect(ks.layout.addressKind).toBe(c.kind);
        expect(ks.layout.order).toBe(c.order);
        expect(ks.layout.hasSeqsOfNames).toBe(c.seqs);
        expect(ks.layout.tables.tokenTable).toBe(img.labels.kallsyms_token_table);
        expect(ks.layout.tables.names).toBe(img.labels.kallsyms_names);
        expect(ks.layout.tables.markers).toBe(img.labels.kallsyms_markers);
        expect(ks.layout.tables.numSyms).toBe(img.labels.kallsyms_num_syms);
        expect(ks.layout.tables.addresses).toBe(img.labels.kallsyms_offsets ?? img.labels.kallsyms_addresses);
        if (img.labels.kallsyms_relative_base !== undefined) {
          expect(ks.layout.tables.relativeBase).toBe(img.labels.kallsyms_relative_base);
          expect(ks.layout.relativeBase).toBe(img.tables.relativeBase);
        }
        if (c.seqs) expect(ks.layout.tables.seqsOfNames).toBe(img.labels.kallsyms_seqs_of_names);
        // one marker (≤ 256 symbols) is the same 0 as a u32 or a u64
        if (n > 256) expect(ks.layout.markerWidth).toBe(c.layout === 'legacy-absolute' ? 8 : 4);
        if (c.layout === 'self-relative') expect(ks.layout.virtDelta).toBe(img.virtDelta);
        // decoys were seen and rejected
        expect(ks.candidates.filter((x) => !x.ok).length).toBeGreaterThan(0);
      });
    }
  }

  it('self-relative with a caller-given VA − PA delta needs no sys_call_table', async () => {
    const syms = syntheticSymbols(7, 500).filter((s) => s.name !== 'sys_call_table');
    const img = buildKallsymsImage(syms, { layout: 'self-relative', seed: 7 });
    const mem = new BufferMemory([{ start: 0, bytes: img.bytes }]);
    await expect(locateKallsyms(mem)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    const ks = await locateKallsyms(mem, { virtDelta: img.virtDelta });
    expectSame(ks, img.tables.symbols);
  });
});

describe('KernelSymbols queries', () => {
  const syms: SynthSymbol[] = [
    { name: 'irq_stack_backing_store', type: 'A', address: 0x2000n },
    { name: '_text', type: 'T', address: 0xffffffffa0000000n },
    { name: 'startup_64', type: 'T', address: 0xffffffffa0000000n },
    { name: 'helper', type: 't', address: 0xffffffffa0001000n },
    { name: 'do_thing.llvm.123456', type: 't', address: 0xffffffffa0002000n },
    { name: 'helper', type: 't', address: 0xffffffffa0003000n },
    { name: 'init_task', type: 'D', address: 0xffffffffa1000000n },
    { name: 'c0123456789', type: 'B', address: 0xffffffffa2000000n },
  ];
  const get = async (): Promise<KernelSymbols> => {
    const img = buildKallsymsImage(syms, { layout: 'tokens-first', absolutePercpu: true, seed: 3 });
    return locateKallsyms(new BufferMemory([{ start: 0, bytes: img.bytes }]));
  };

  it('lookup returns every match, strips .llvm.<n>', async () => {
    const ks = await get();
    expect(ks.lookup('helper').map((s) => s.address)).toEqual([0xffffffffa0001000n, 0xffffffffa0003000n]);
    expect(ks.lookup('do_thing')).toHaveLength(1);
    expect(ks.lookup('do_thing')[0].name).toBe('do_thing.llvm.123456');
    expect(ks.lookup('do_thing.llvm.123456')).toHaveLength(1);
    expect(ks.lookup('do_thing.llvm.1')).toHaveLength(0);
    expect(ks.lookup('nope')).toEqual([]);
    expect(ks.addressOf('init_task')).toBe(0xffffffffa1000000n);
    expect(ks.hasLlvmSuffixes).toBe(true);
    expect(stripLlvmSuffix('a.llvm.12')).toBe('a');
    expect(stripLlvmSuffix('a.llvm.x')).toBe('a.llvm.x');
  });

  it('byAddress gives the nearest symbol at or below, first alias wins', async () => {
    const ks = await get();
    expect(ks.byAddress(0xffffffffa0000010n)).toMatchObject({ name: '_text', offset: 0x10n });
    expect(ks.byAddress(0xffffffffa0003000n)).toMatchObject({ name: 'helper', offset: 0n });
    expect(ks.byAddress(0xffffffffa0fffff0n)).toMatchObject({ name: 'helper', offset: 0xffcff0n });
    expect(ks.byAddress(0x1000n)).toBeUndefined();
    expect(ks.symbolize(0xffffffffa1000008n)).toBe('init_task+0x8');
    expect(ks.byAddress(0xffffffffa1000008n, 4n)).toBeUndefined();
    const all = [...ks];
    expect(all.map((s) => s.name)).toEqual(syms.map((s) => s.name));
    expect(ks.summary()).toMatchObject({ count: syms.length, _text: '0xffffffffa0000000' });
  });
});

describe('kallsyms failure modes', () => {
  it('random bytes → E_NOT_FOUND, fast', async () => {
    const img = buildKallsymsImage(syntheticSymbols(1, 10), { layout: 'tokens-first', seed: 1, decoys: 20 });
    const bytes = img.bytes.slice();
    // wipe the real blob, keep noise + decoys
    bytes.fill(0x41, img.blobPhys, img.blobPhys + img.tables.bytes.length);
    const t0 = performance.now();
    const err = await locateKallsyms(new BufferMemory([{ start: 0, bytes }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PmiError);
    expect((err as PmiError).code).toBe('E_NOT_FOUND');
    expect((err as PmiError).data.hits).toBeGreaterThan(0);
    expect(performance.now() - t0).toBeLessThan(2000);
    const pure = new Uint8Array(16 << 20);
    for (let i = 0; i < pure.length; i++) pure[i] = (i * 2654435761) >>> 24;
    const e2 = await locateKallsyms(new BufferMemory([{ start: 0, bytes: pure }])).catch((e: unknown) => e);
    expect((e2 as PmiError).code).toBe('E_NOT_FOUND');
    expect((e2 as PmiError).message).toMatch(/no token-table digit run/);
  });

  it('zeroed token_table → E_NOT_FOUND saying what was tried', async () => {
    const img = buildKallsymsImage(syntheticSymbols(2, 900), { layout: 'offsets-first-seqs', seed: 2 });
    const bytes = img.bytes.slice();
    const tt = img.labels.kallsyms_token_table;
    bytes.fill(0, tt, img.labels.kallsyms_token_index);
    const err = (await locateKallsyms(new BufferMemory([{ start: 0, bytes }])).catch((e: unknown) => e)) as PmiError;
    expect(err.code).toBe('E_NOT_FOUND');
    expect(err.data.tried).toBeInstanceOf(Array);
    expect(JSON.stringify(err.toJSON())).toContain('tried');
  });

  it('zeroed markers / names / offsets → E_NOT_FOUND with the failed check', async () => {
    for (const [label, len, re] of [
      ['kallsyms_markers', 20, /markers/],
      ['kallsyms_names', 64, /names|markers/],
      ['kallsyms_offsets', 64, /sorted|address/],
    ] as const) {
      const img = buildKallsymsImage(syntheticSymbols(4, 1200, { percpu: true }), { layout: 'tokens-first', seed: 4 });
      const bytes = img.bytes.slice();
      bytes.fill(0, img.labels[label], img.labels[label] + len);
      const err = (await locateKallsyms(new BufferMemory([{ start: 0, bytes }])).catch((e: unknown) => e)) as PmiError;
      expect(err.code, label).toBe('E_NOT_FOUND');
      const why = (err.data.tried as { ok: boolean; why?: string }[]).filter(
        (t) => t.why && !/non-printable|NUL|longer/.test(t.why),
      );
      expect(why.map((w) => w.why).join(' | '), label).toMatch(re);
    }
  });

  it('truncated tables (memory ends inside them) → E_NOT_FOUND', async () => {
    const img = buildKallsymsImage(syntheticSymbols(5, 2000, { percpu: true }), { layout: 'offsets-first', seed: 5 });
    // cut right after token_index: offsets-first has everything before → fine; cut inside names instead
    const cut = img.labels.kallsyms_names + 100;
    const mem = new BufferMemory([{ start: cut, bytes: img.bytes.slice(cut) }]);
    await expect(locateKallsyms(mem)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('fuzz: seeded mutations never throw non-PmiErrors or hang', async () => {
    const syms = syntheticSymbols(9, 700, { percpu: true });
    const layouts: SynthLayout[] = ['offsets-first', 'offsets-first-seqs', 'tokens-first', 'legacy-absolute'];
    let rnd = 12345;
    const next = (): number => {
      rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
      return rnd / 2 ** 32;
    };
    let found = 0;
    let notFound = 0;
    for (let round = 0; round < 60; round++) {
      const layout = layouts[round % layouts.length];
      const t = buildKallsymsTables(syms, { layout, absolutePercpu: true });
      const size = t.bytes.length + 8192;
      const bytes = new Uint8Array(size);
      bytes.set(t.bytes, 4096);
      const muts = 1 + Math.floor(next() * 40);
      for (let m = 0; m < muts; m++) {
        const at = 4096 + Math.floor(next() * t.bytes.length);
        const kind = next();
        if (kind < 0.6) bytes[at] = Math.floor(next() * 256);
        else if (kind < 0.8) bytes.fill(0, at, at + Math.floor(next() * 64));
        else bytes.fill(0xff, at, at + Math.floor(next() * 16));
      }
      const t0 = performance.now();
      try {
        const ks = await locateKallsyms(new BufferMemory([{ start: 0, bytes }]));
        expect(ks.count).toBeGreaterThan(0);
        found++;
      } catch (e) {
        expect(e).toBeInstanceOf(PmiError);
        expect((e as PmiError).code).toBe('E_NOT_FOUND');
        notFound++;
      }
      expect(performance.now() - t0).toBeLessThan(3000);
    }
    expect(found + notFound).toBe(60);
  });
});
