import { describe, expect, it } from 'vitest';
import { BufferMemory, isPmiError, PmiError } from '@pmi/core';
import {
  checkTopTable,
  CountingMemory,
  dtbFromCr3,
  FAULT,
  hex64,
  isCanonical,
  isKernelTopTable,
  NEEDS_IO,
  PageTableBuilder,
  pageKey,
  TranslationCache,
  vaHex,
  vaJoin,
  vaSplit,
  X86Paging,
  type MappedRange,
  type PageSize,
} from '@pmi/kernel';

const K = 4096;
const M2 = 2 * 1024 * 1024;
const G1 = 1024 * 1024 * 1024;

/** xorshift32: reproducible randomness. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

function faultOf(e: unknown): PmiError {
  expect(isPmiError(e)).toBe(true);
  const err = e as PmiError;
  expect(err.code).toBe('E_PAGE_FAULT');
  return err;
}

describe('va helpers', () => {
  it('split/join/hex are exact for 57-bit sign-extended addresses', () => {
    const va = 0xff11223344556789n;
    const { hi, lo } = vaSplit(va);
    expect(hi).toBe(0xff112233);
    expect(lo).toBe(0x44556789);
    expect(vaJoin(hi, lo)).toBe(va);
    expect(hex64(hi, lo)).toBe('0xff11223344556789');
    expect(hex64(0, 0x1000)).toBe('0x1000');
    expect(vaHex(-1n)).toBe('0xffffffffffffffff');
    expect(vaSplit(-0x1000n)).toEqual({ hi: 0xffffffff, lo: 0xfffff000 });
    // the page key is the 52-bit virtual page number, exact in a double
    expect(pageKey(0xffffffff, 0xfffff000)).toBe(2 ** 52 - 1);
    expect(BigInt(pageKey(hi, lo))).toBe(va >> 12n);
  });

  it('canonical checks for 48 and 57 bits', () => {
    expect(isCanonical(0x00007fffffffffffn, 4)).toBe(true);
    expect(isCanonical(0x0000800000000000n, 4)).toBe(false);
    expect(isCanonical(0xffff800000000000n, 4)).toBe(true);
    expect(isCanonical(0xfffe800000000000n, 4)).toBe(false);
    expect(isCanonical(0x0000800000000000n, 5)).toBe(true);
    expect(isCanonical(0x00ffffffffffffffn, 5)).toBe(true);
    expect(isCanonical(0x0100000000000000n, 5)).toBe(false);
    expect(isCanonical(0xff00000000000000n, 5)).toBe(true);
    expect(isCanonical(0xfe00000000000000n, 5)).toBe(false);
    expect(isCanonical(1n << 64n, 4)).toBe(false);
  });

  it('dtbFromCr3 drops PCID and the no-flush bit', () => {
    expect(dtbFromCr3(0x8000000012345abcn)).toBe(0x12345000);
  });
});

describe('PageTableBuilder writes the entries a CPU expects (hand-computed)', () => {
  it('4-level, 4 KiB page with NX', () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    expect(b.dtb).toBe(0x3ff000);
    b.map(0xffffffff81234000n, 0x5678000, K, { nx: true });
    // indices 511, 510, 9, 52; tables allocated downward from the top of RAM
    expect(b.entryAt(0x3ffff8)).toBe(0x3fe027n); // PML4[511] → PDPT
    expect(b.entryAt(0x3feff0)).toBe(0x3fd027n); // PDPT[510] → PD
    expect(b.entryAt(0x3fd048)).toBe(0x3fc027n); // PD[9] → PT
    expect(b.entryAt(0x3fc1a0)).toBe(0x8000000005678023n); // PT[52]: NX | frame | A | RW | P
  });

  it('4-level, 2 MiB and 1 GiB pages with PAT', () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    b.map(0xffff888000200000n, 0x40000000, M2, { pageSize: '2M', pat: true });
    b.map(0xffff888040000000n, 0x80000000, G1, { pageSize: '1G', pat: true });
    expect(b.entryAt(0x3ff888)).toBe(0x3fe027n); // PML4[273]
    expect(b.entryAt(0x3fe000)).toBe(0x3fd027n); // PDPT[0] → PD
    expect(b.entryAt(0x3fd008)).toBe(0x400010a3n); // PD[1]: PAT | PS | A | RW | P
    expect(b.entryAt(0x3fe008)).toBe(0x800010a3n); // PDPT[1]: 1 GiB leaf
  });

  it('5-level, 4 KiB page above 4 GiB physical, user', () => {
    const b = new PageTableBuilder({ levels: 5, ramSize: 0x400000 });
    b.map(0xff11223344556000n, 0x123456789000, K, { user: true });
    // indices 273, 68, 205, 34, 342
    expect(b.entryAt(0x3ff888)).toBe(0x3fe027n);
    expect(b.entryAt(0x3fe220)).toBe(0x3fd027n);
    expect(b.entryAt(0x3fd668)).toBe(0x3fc027n);
    expect(b.entryAt(0x3fc110)).toBe(0x3fb027n);
    expect(b.entryAt(0x3fbab0)).toBe(0x123456789027n);
  });

  it('rejects a non-canonical VA, misalignment, and a table under a large page', () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    expect(() => b.map(0x0000800000000000n, 0, K)).toThrow(/non-canonical/);
    expect(() => b.map(0xffff888000001000n, 0, M2, { pageSize: '2M' })).toThrow(/multiples/);
    b.map(0xffff888000000000n, 0, M2, { pageSize: '2M' });
    expect(() => b.map(0xffff888000001000n, 0, K)).toThrow(/large page/);
  });
});

describe('X86Paging on hand-computed tables', () => {
  function handBuilt() {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    b.map(0xffffffff81234000n, 0x5678000, K, { nx: true });
    b.map(0xffff888000200000n, 0x40000000, M2, { pageSize: '2M', pat: true });
    b.map(0xffff888040000000n, 0x80000000, G1, { pageSize: '1G', pat: true });
    return b;
  }

  it('translates 4 KiB, 2 MiB (PAT) and 1 GiB (PAT) pages', async () => {
    const b = handBuilt();
    for (const opts of [{}, { tlb: false, tableCache: false }]) {
      const p = new X86Paging(b.memory(), b.dtb, 4, opts);
      expect(await p.translate(0xffffffff81234abcn)).toBe(0x5678abc);
      expect(p.translateSync(0xffffffff81234abcn)).toBe(0x5678abc);
      // the PAT bit (bit 12) of the large-page entry must not show up in the address
      expect(await p.translate(0xffff888000212345n)).toBe(0x40012345);
      expect(await p.translate(0xffff88807fffffffn)).toBe(0xbfffffff);
      expect(await p.translate(0xffff888040001000n)).toBe(0x80001000);
    }
  });

  it('translateHiLo: -1 on faults, no throw; lastFaultError names level and entry', () => {
    const b = handBuilt();
    const p = new X86Paging(b.memory(), b.dtb, 4);
    expect(p.translateHiLo(0xffffffff, 0x81234abc)).toBe(0x5678abc);
    // PT[53] next to the mapped page: not present at PT level
    expect(p.translateHiLo(0xffffffff, 0x81235000)).toBe(FAULT);
    const e = p.lastFaultError(0xffffffff81235000n);
    expect(e.code).toBe('E_PAGE_FAULT');
    expect(e.data).toMatchObject({
      virtual_address: '0xffffffff81235000',
      level: 'PT',
      reason: 'not_present',
      entry_address: '0x3fc1a8',
      entry_value: '0x0',
    });
    expect(p.translateHiLo(0x00008000, 0)).toBe(FAULT); // non-canonical
    expect(p.lastFaultError(0x0000800000000000n).data).toMatchObject({ reason: 'non_canonical', level: null });
  });

  it('faults at the right level with the right entry', async () => {
    const b = handBuilt();
    const p = new X86Paging(b.memory(), b.dtb, 4);
    const cases: [bigint, string, number][] = [
      [0x0000000000001000n, 'PML4', 0x3ff000], // PML4[0]
      [0xffffffffc0000000n, 'PDPT', 0x3feff8], // PDPT[511] of the 0xffffffff8… table
      [0xffffffff80000000n, 'PD', 0x3fd000], // PD[0]
      [0xffffffff81200000n, 'PT', 0x3fc000], // PT[0]
    ];
    for (const [va, level, entry] of cases) {
      const err = faultOf(await p.translate(va).catch((e: unknown) => e));
      expect(err.data.level, vaHex(va)).toBe(level);
      expect(err.data.entry_address).toBe('0x' + entry.toString(16));
      expect(err.data.virtual_address).toBe(vaHex(va));
      expect(err.toJSON()).toMatchObject({ code: 'E_PAGE_FAULT', origin: 'paging', level });
    }
    const nc = faultOf(await p.translate(0x0000800000000000n).catch((e: unknown) => e));
    expect(nc.data.reason).toBe('non_canonical');
    expect(faultOf(await p.translate(1n << 64n).catch((e: unknown) => e)).data.reason).toBe('non_canonical');
  });

  it('explain() lists every level with entry address, raw value and decoded flags', async () => {
    const b = handBuilt();
    b.setEntry(0x3fc1a0, b.entryAt(0x3fc1a0) | 0x40n | 0x100n); // dirty + global on the PTE
    const p = new X86Paging(b.memory(), b.dtb, 4);
    const x = await p.explain(0xffffffff81234abcn);
    expect(x.physical).toBe(0x5678abc);
    expect(x.physical_address).toBe('0x5678abc');
    expect(x.page_size).toBe(K);
    expect(x.entries.map((e) => [e.level, e.index, e.entry_address, e.entry_value])).toEqual([
      ['PML4', 511, '0x3ffff8', '0x3fe027'],
      ['PDPT', 510, '0x3feff0', '0x3fd027'],
      ['PD', 9, '0x3fd048', '0x3fc027'],
      ['PT', 52, '0x3fc1a0', '0x8000000005678163'],
    ]);
    expect(x.entries[3].flags).toEqual({
      present: true,
      rw: true,
      user: false,
      pwt: false,
      pcd: false,
      accessed: true,
      dirty: true,
      ps: false,
      global: true,
      nx: true,
    });
    expect(x.entries[3].leaf).toBe(true);
    expect(x.effective).toEqual({ rw: true, user: false, nx: true });
    const big = await p.explain(0xffff888000212345n);
    expect(big.entries.map((e) => e.level)).toEqual(['PML4', 'PDPT', 'PD']);
    expect(big.entries[2]).toMatchObject({ entry_value: '0x400010a3', leaf: true, page_size: M2 });
    expect(big.physical).toBe(0x40012345);
    const miss = await p.explain(0xffffffff81235000n);
    expect(miss.physical).toBeNull();
    expect(miss.entries).toHaveLength(4);
    expect(miss.fault?.data.level).toBe('PT');
    const nc = await p.explain(0x1234567812345678n);
    expect(nc.canonical).toBe(false);
  });

  it('PS=1 at PML4 is a reserved-bit fault', async () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    b.setEntry(b.dtb + 8, 0x200083n); // PML4[1]: P|RW|PS
    const p = new X86Paging(b.memory(), b.dtb, 4);
    const err = faultOf(await p.translate(0x0000008000000000n).catch((e: unknown) => e));
    expect(err.data).toMatchObject({ level: 'PML4', reason: 'reserved_bit', entry_value: '0x200083' });
  });

  it('a table outside the source is an unreadable_table fault', async () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x400000 });
    b.setEntry(b.dtb, 0x7000000003n); // PML4[0] → table at 448 GiB (not in RAM)
    for (const sync of [true, false]) {
      const p = new X86Paging(new CountingMemory(b.memory(), { sync }), b.dtb, 4);
      const err = faultOf(await p.translate(0x1000n).catch((e: unknown) => e));
      expect(err.data).toMatchObject({ level: 'PDPT', reason: 'unreadable_table', entry_address: '0x7000000000' });
    }
  });

  it('the 5-level hand-built mapping translates only with levels=5', async () => {
    const b = new PageTableBuilder({ levels: 5, ramSize: 0x400000 });
    b.map(0xff11223344556000n, 0x123456789000, K, { user: true });
    const p5 = new X86Paging(b.memory(), b.dtb, 5);
    expect(await p5.translate(0xff11223344556789n)).toBe(0x123456789789);
    const p4 = new X86Paging(b.memory(), b.dtb, 4);
    await expect(p4.translate(0xff11223344556789n)).rejects.toThrow(/canonical/);
  });

  it('rejects a misaligned DTB', () => {
    const b = new PageTableBuilder({ ramSize: 0x400000 });
    expect(() => new X86Paging(b.memory(), 0x1234, 4)).toThrow(/aligned/);
  });
});

type Mapping = { va: bigint; pa: number; size: number; pageSize: number; nx: boolean; user: boolean; rw: boolean };

/** Random non-overlapping mappings: one per distinct 1 GiB slot, in both halves. */
function randomSpace(levels: 4 | 5, seed: number, count = 40) {
  const r = rng(seed);
  const b = new PageTableBuilder({ levels, ramSize: 32 * 1024 * 1024, dataBase: 0x100000 });
  const bits = levels === 5 ? 57 : 48;
  const slots = new Set<bigint>();
  const maps: Mapping[] = [];
  const sizes: PageSize[] = ['4K', '4K', '4K', '2M', '2M', '1G'];
  while (maps.length < count) {
    // a 1 GiB slot anywhere in the canonical space (user or kernel half)
    const idx = BigInt(Math.floor(r() * 2 ** (bits - 31))); // 1 GiB slot within a half
    const kernel = r() < 0.5;
    let va = idx << 30n;
    if (kernel) va = BigInt.asUintN(64, va | (-1n << BigInt(bits - 1)));
    if (slots.has(va)) continue;
    slots.add(va);
    const ps = sizes[Math.floor(r() * sizes.length)];
    const pageSize = ps === '4K' ? K : ps === '2M' ? M2 : G1;
    const n = pageSize === G1 ? 1 : 1 + Math.floor(r() * 4);
    const within = pageSize === G1 ? 0n : BigInt(Math.floor(r() * (G1 / pageSize - n))) * BigInt(pageSize);
    // physical frames: random (may be above 4 GiB; PAT set at random on large pages)
    const pa = Math.floor(r() * 2 ** (52 - Math.log2(pageSize))) * pageSize;
    const m: Mapping = {
      va: va + within,
      pa: Math.min(pa, 2 ** 52 - n * pageSize),
      size: n * pageSize,
      pageSize,
      nx: r() < 0.5,
      user: !kernel,
      rw: r() < 0.7,
    };
    m.pa -= m.pa % pageSize;
    b.map(m.va, m.pa, m.size, { pageSize: ps, nx: m.nx, user: m.user, rw: m.rw, pat: r() < 0.5 });
    maps.push(m);
  }
  return { b, maps, r };
}

describe('builder and translator agree on random mappings', () => {
  for (const levels of [4, 5] as const) {
    for (const opts of [{}, { tlb: false, tableCache: false }, { tlb: false }] as const) {
      it(`${levels}-level, caches ${JSON.stringify(opts)}`, async () => {
        const { b, maps, r } = randomSpace(levels, 0xc0ffee + levels);
        const p = new X86Paging(b.memory(), b.dtb, levels, opts);
        let checked = 0;
        for (const m of maps) {
          for (let k = 0; k < 8; k++) {
            const off = Math.floor(r() * m.size);
            const va = m.va + BigInt(off);
            const want = m.pa + off; // from the mapping parameters, not from any walker
            expect(p.translateSync(va), vaHex(va)).toBe(want);
            expect(b.walk(va)).toMatchObject({ mapped: true, pa: want, pageSize: m.pageSize });
            const { hi, lo } = vaSplit(va);
            expect(p.translateHiLo(hi, lo)).toBe(want);
            checked++;
          }
          const x = await p.explain(m.va);
          expect(x.effective).toEqual({ rw: m.rw, user: m.user, nx: m.nx });
          expect(x.page_size).toBe(m.pageSize);
          // just past the mapping: unmapped, faulting where the reference walk stops
          const after = m.va + BigInt(m.size);
          if (!isCanonical(after, levels)) continue;
          const ref = b.walk(after);
          if (ref.mapped) continue;
          const err = faultOf(await p.translate(after).catch((e: unknown) => e));
          expect(err.data.level).toBe(
            (levels === 5 ? ['PML5', 'PML4', 'PDPT', 'PD', 'PT'] : ['PML4', 'PDPT', 'PD', 'PT'])[ref.level],
          );
          expect(err.data.entry_address).toBe('0x' + ref.entryAddress.toString(16));
        }
        expect(checked).toBe(maps.length * 8);
        // batch translation gives the same answers as one by one
        const vas = maps.flatMap((m) => [m.va, m.va + BigInt(m.size) - 1n, m.va + BigInt(m.size)]);
        const batch = await new X86Paging(
          new CountingMemory(b.memory(), { sync: false }),
          b.dtb,
          levels,
          opts,
        ).translateBatch(vas);
        for (let i = 0; i < vas.length; i++) {
          const ref = b.walk(vas[i]);
          if (!isCanonical(vas[i], levels)) expect(batch[i]).toBeInstanceOf(PmiError);
          else if (ref.mapped) expect(batch[i]).toBe(ref.pa);
          else expect((batch[i] as PmiError).code).toBe('E_PAGE_FAULT');
        }
      });
    }
  }

  it('non-canonical addresses fault in both modes', async () => {
    for (const levels of [4, 5] as const) {
      const { b } = randomSpace(levels, 7, 4);
      const p = new X86Paging(b.memory(), b.dtb, levels);
      const bad =
        levels === 4
          ? [0x0000800000000000n, 0xfff0000000000000n, 0x7fffffffffffffffn]
          : [0x0100000000000000n, 0xfe00000000000000n];
      for (const va of bad) {
        const err = faultOf(await p.translate(va).catch((e: unknown) => e));
        expect(err.data.reason).toBe('non_canonical');
        expect(err.data.virtual_address).toBe(vaHex(va));
      }
    }
  });
});

/** Fill the data pages of some mappings with random bytes inside the builder's RAM. */
function dataSpace(levels: 4 | 5, seed: number) {
  const r = rng(seed);
  const b = new PageTableBuilder({ levels, ramSize: 32 * 1024 * 1024 });
  const maps: { va: bigint; size: number }[] = [];
  // 1. a physically contiguous 64 KiB region mapped with 4 KiB pages
  const contig = b.alloc(16 * K);
  b.map(0xffffc90000010000n, contig, 16 * K, { nx: true });
  maps.push({ va: 0xffffc90000010000n, size: 16 * K });
  // 2. 16 pages scattered in physical memory (mapped in reverse order)
  const scattered = 0xffffc90000100000n;
  const frames: number[] = [];
  for (let i = 0; i < 16; i++) {
    frames.push(b.alloc(K));
    b.alloc(K); // a gap after each frame
  }
  for (let i = 0; i < 16; i++) b.map(scattered + BigInt(i * K), frames[15 - i], K);
  maps.push({ va: scattered, size: 16 * K });
  // 3. a 2 MiB page
  const big = b.alloc(M2, M2);
  b.map(0xffffffff82000000n, big, M2, { pageSize: '2M', pat: true });
  maps.push({ va: 0xffffffff82000000n, size: M2 });
  // 4. a user page (a hole after it)
  const u = b.alloc(K);
  b.map(0x00007f0000001000n, u, K, { user: true });
  maps.push({ va: 0x00007f0000001000n, size: K });
  for (let a = 0x100000; a < b.ram.length / 2; a += 4) {
    const v = Math.floor(r() * 4294967296);
    b.ram[a] = v;
    b.ram[a + 1] = v >>> 8;
    b.ram[a + 2] = v >>> 16;
    b.ram[a + 3] = v >>> 24;
  }
  /** Reference virtual read: byte by byte through the builder's walk. */
  const refRead = (va: bigint, len: number): { bytes: Uint8Array } | { faultAt: bigint } => {
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) {
      const w = b.walk(va + BigInt(i));
      if (!w.mapped) return { faultAt: va + BigInt(i) };
      out[i] = b.ram[w.pa];
    }
    return { bytes: out };
  };
  return { b, maps, r, refRead };
}

describe('batched virtual reads', () => {
  for (const levels of [4, 5] as const) {
    it(`${levels}-level: readVirtualBatch equals per-address translation + physical read`, async () => {
      const { b, maps, r, refRead } = dataSpace(levels, 99 + levels);
      for (const sync of [true, false]) {
        for (const opts of [{}, { tlb: false, tableCache: false }]) {
          const mem = new CountingMemory(b.memory(), { sync });
          const p = new X86Paging(mem, b.dtb, levels, opts);
          const ops: { va: bigint; buf: Uint8Array }[] = [];
          for (let i = 0; i < 60; i++) {
            const m = maps[Math.floor(r() * maps.length)];
            const off = Math.floor(r() * m.size);
            // some reads run past the end of the mapping into unmapped memory
            const len = 1 + Math.floor(r() * (r() < 0.2 ? 3 * K : 600));
            ops.push({ va: m.va + BigInt(off), buf: new Uint8Array(len) });
          }
          ops.push({ va: 0xffffc90000010ff0n, buf: new Uint8Array(0) });
          ops.push({ va: 0x0000900000000000n, buf: new Uint8Array(4) }); // non-canonical in 4-level
          const failures = await p.readVirtualBatch(ops);
          const failedAt = new Map(failures.map((f) => [f.index, f.error]));
          let faults = 0;
          for (let i = 0; i < ops.length; i++) {
            const ref = refRead(ops[i].va, ops[i].buf.length);
            const canon = isCanonical(ops[i].va, levels);
            if (!canon) {
              expect(failedAt.get(i)?.data.reason).toBe('non_canonical');
            } else if ('bytes' in ref) {
              expect(failedAt.has(i), `op ${i}`).toBe(false);
              expect(Buffer.from(ops[i].buf).equals(Buffer.from(ref.bytes)), `op ${i} bytes`).toBe(true);
            } else {
              faults++;
              const err = failedAt.get(i)!;
              expect(err.code).toBe('E_PAGE_FAULT');
              expect(err.data.virtual_address).toBe(vaHex(ref.faultAt));
            }
          }
          expect(faults).toBeGreaterThan(0);
          // readVirtual / readVirtualSync agree
          const got = await p.readVirtual(0xffffc900000100f0n, 3 * K);
          expect(
            Buffer.from(got).equals(Buffer.from((refRead(0xffffc900000100f0n, 3 * K) as { bytes: Uint8Array }).bytes)),
          ).toBe(true);
          if (sync) {
            const s = new Uint8Array(5 * K);
            p.readVirtualSync(0xffffc90000100800n, s);
            expect(
              Buffer.from(s).equals(Buffer.from((refRead(0xffffc90000100800n, 5 * K) as { bytes: Uint8Array }).bytes)),
            ).toBe(true);
            expect(() => p.readVirtualSync(0xffffc9000010f000n, new Uint8Array(2 * K + 4096))).toThrow(
              /0xffffc90000110000/,
            );
          }
          await expect(p.readVirtual(0xffffc9000001fff0n, 32)).rejects.toMatchObject({
            code: 'E_PAGE_FAULT',
            data: { virtual_address: '0xffffc90000020000' },
          });
        }
      }
    });
  }

  it('a mapped page whose frame is not in the source fails with the source error, neighbours succeed', async () => {
    const b = new PageTableBuilder({ ramSize: 0x800000 });
    b.map(0xffffc90000000000n, 0x100000, K);
    b.map(0xffffc90000001000n, 0x40000000, K); // beyond RAM
    const p = new X86Paging(new CountingMemory(b.memory(), { sync: false }), b.dtb, 4);
    const ops = [
      { va: 0xffffc90000000000n, buf: new Uint8Array(K) },
      { va: 0xffffc90000001000n, buf: new Uint8Array(16) },
    ];
    const f = await p.readVirtualBatch(ops);
    expect(f.map((x) => [x.index, x.error.code])).toEqual([[1, 'E_OUT_OF_RANGE']]);
  });

  it('coalesces physically contiguous runs into few physical ops', async () => {
    const { b } = dataSpace(4, 5);
    const mem = new CountingMemory(b.memory(), { sync: false });
    const p = new X86Paging(mem, b.dtb, 4);
    // warm the tables, then count only the data read
    await p.translate(0xffffc90000010000n);
    await p.translate(0xffffc90000100000n);
    await p.translate(0xffffffff82000000n);
    mem.reset();
    // 16 adjacent 4 KiB reads of the contiguous region (given out of order) → 1 physical op
    const ops = [];
    for (let i = 15; i >= 0; i--) ops.push({ va: 0xffffc90000010000n + BigInt(i * K), buf: new Uint8Array(K) });
    expect(await p.readVirtualBatch(ops)).toEqual([]);
    expect(mem.batches).toBe(1);
    expect(mem.ops).toBe(1);
    // one 64 KiB read of the same region: 1 op; a 1 MiB read inside the 2 MiB page: 1 op
    mem.reset();
    expect(
      await p.readVirtualBatch([
        { va: 0xffffc90000010000n, buf: new Uint8Array(16 * K) },
        { va: 0xffffffff82010000n, buf: new Uint8Array(1 << 20) },
      ]),
    ).toEqual([]);
    expect(mem.ops).toBe(2);
    // overlapping reads share one physical op
    mem.reset();
    expect(
      await p.readVirtualBatch([
        { va: 0xffffc90000010100n, buf: new Uint8Array(100) },
        { va: 0xffffc90000010080n, buf: new Uint8Array(300) },
      ]),
    ).toEqual([]);
    expect(mem.ops).toBe(1);
    // the scattered region: 16 pages at 16 separate frames (a gap after each) → 16 ops
    mem.reset();
    expect(await p.readVirtualBatch([{ va: 0xffffc90000100000n, buf: new Uint8Array(16 * K) }])).toEqual([]);
    expect(mem.batches).toBe(1);
    expect(mem.ops).toBe(16);
  });

  it('breadth-first: a batch of many addresses costs levels + 1 round trips', async () => {
    for (const levels of [4, 5] as const) {
      for (const opts of [{}, { tlb: false, tableCache: false }]) {
        const { b, maps, r } = randomSpace(levels, 1234 + levels, 60);
        // give the data somewhere to live: remap every mapping's reads into RAM-backed frames
        const ram = new BufferMemory([{ start: 0, bytes: b.ram }]);
        const mem = new CountingMemory(ram, { sync: false });
        const p = new X86Paging(mem, b.dtb, levels, opts);
        const vas = [];
        for (let i = 0; i < 500; i++) {
          const m = maps[Math.floor(r() * maps.length)];
          vas.push(m.va + BigInt(Math.floor(r() * m.size)));
        }
        const res = await p.translateBatch(vas);
        for (let i = 0; i < vas.length; i++) expect(res[i]).toBe((b.walk(vas[i]) as { pa: number }).pa);
        expect(mem.batches).toBe(levels);
        // a virtual read batch over RAM-backed pages: levels table reads + 1 data read
        const d = dataSpace(levels, 77);
        const m2 = new CountingMemory(d.b.memory(), { sync: false });
        const p2 = new X86Paging(m2, d.b.dtb, levels, opts);
        const ops = [];
        for (let i = 0; i < 200; i++) {
          const m = d.maps[i % 3];
          ops.push({ va: m.va + BigInt(Math.floor(d.r() * (m.size - 64))), buf: new Uint8Array(64) });
        }
        expect(await p2.readVirtualBatch(ops)).toEqual([]);
        expect(m2.batches).toBe(levels + 1);
      }
    }
  });
});

describe('caches', () => {
  it('TLB and table cache serve repeated translations without reads', async () => {
    const { b, maps } = randomSpace(4, 3, 10);
    const mem = new CountingMemory(b.memory(), { sync: true });
    const p = new X86Paging(mem, b.dtb, 4);
    p.translateSync(maps[0].va);
    const reads = mem.syncReads;
    expect(reads).toBeGreaterThan(0);
    for (let i = 0; i < 100; i++) p.translateSync(maps[0].va + BigInt(i % 4096));
    expect(mem.syncReads).toBe(reads);
    expect(p.stats.tlbHits).toBeGreaterThanOrEqual(99);
  });

  it('on an async source, translateHiLo works from cached tables and says NEEDS_IO otherwise', async () => {
    const { b, maps } = randomSpace(4, 4, 6);
    const p = new X86Paging(new CountingMemory(b.memory(), { sync: false }), b.dtb, 4, { tlb: false });
    const { hi, lo } = vaSplit(maps[0].va);
    expect(p.translateHiLo(hi, lo)).toBe(NEEDS_IO);
    await p.translate(maps[0].va);
    expect(p.translateHiLo(hi, lo)).toBe(maps[0].pa);
  });

  it('invalidatePage / invalidate after remapping', async () => {
    const b = new PageTableBuilder({ ramSize: 0x800000 });
    const va = 0xffffc90000005000n;
    const va2 = 0xffffc90000006000n;
    b.map(va, 0x100000, K).map(va2, 0x200000, K);
    const p = new X86Paging(b.memory(), b.dtb, 4);
    expect(p.translateSync(va)).toBe(0x100000);
    expect(p.translateSync(va2)).toBe(0x200000);
    b.map(va, 0x300000, K).map(va2, 0x400000, K); // remap both leaves
    expect(p.translateSync(va)).toBe(0x100000); // stale until flushed (a dump never changes)
    p.invalidatePage(va);
    expect(p.translateSync(va)).toBe(0x300000);
    expect(p.translateSync(va2)).toBe(0x200000); // its TLB entry survived invalidatePage(va)
    p.invalidate();
    expect(p.translateSync(va2)).toBe(0x400000);
    b.unmap(va, K);
    p.invalidate();
    expect(() => p.translateSync(va)).toThrow(/PT entry not present/);
  });

  it('a shared TranslationCache keeps address spaces apart by DTB', () => {
    const a = new PageTableBuilder({ ramSize: 0x800000 });
    a.map(0xffffc90000000000n, 0x100000, K);
    const b = new PageTableBuilder({ ramSize: 0x400000 });
    b.map(0xffffc90000000000n, 0x200000, K);
    expect(a.dtb).not.toBe(b.dtb);
    const tlb = new TranslationCache();
    const p1 = new X86Paging(a.memory(), a.dtb, 4, { tlb });
    const p2 = new X86Paging(b.memory(), b.dtb, 4, { tlb });
    expect(p1.translateSync(0xffffc90000000000n)).toBe(0x100000);
    expect(p2.translateSync(0xffffc90000000000n)).toBe(0x200000);
    expect(tlb.size(a.dtb)).toBe(1);
    expect(tlb.size(b.dtb)).toBe(1);
    p1.invalidate();
    expect(tlb.size(a.dtb)).toBe(0);
    expect(tlb.size(b.dtb)).toBe(1);
    expect(p2.translateSync(0xffffc90000000123n)).toBe(0x200123);
    expect(p2.stats.tlbHits).toBe(1);
  });

  it('live sources: caches expire after liveTtlMs without invalidate()', async () => {
    const b = new PageTableBuilder({ ramSize: 0x800000 });
    const va = 0xffffc90000005000n;
    b.map(va, 0x100000, K);
    const p = new X86Paging(b.memory({ live: true }), b.dtb, 4, { liveTtlMs: 20 });
    expect(p.translateSync(va)).toBe(0x100000);
    b.map(va, 0x300000, K);
    expect(p.translateSync(va)).toBe(0x100000);
    await new Promise((r) => setTimeout(r, 40));
    expect(p.translateSync(va)).toBe(0x300000);
  });
});

describe('mappings()', () => {
  it('enumerates and coalesces mapped ranges in address order', async () => {
    const b = new PageTableBuilder({ levels: 4, ramSize: 0x800000 });
    b.map(0x00007f0000000000n, 0x100000, 3 * K, { user: true }); // 3 contiguous pages
    b.map(0x00007f0000003000n, 0x200000, K, { user: true }); // contiguous VA, not PA
    b.map(0xffff888000000000n, 0, 4 * M2, { pageSize: '2M', nx: true, pat: true });
    b.map(0xffff888000800000n, 0x800000, M2, { pageSize: '2M', nx: false });
    b.map(0xffff888040000000n, 0x40000000, G1, { pageSize: '1G', nx: true });
    b.map(0xffffffff81000000n, 0x1000000, 2 * K, { rw: false });
    for (const sync of [true, false]) {
      const mem = new CountingMemory(b.memory(), { sync });
      const p = new X86Paging(mem, b.dtb, 4);
      const got: MappedRange[] = [];
      for await (const m of p.mappings()) got.push(m);
      const rows = got.map((m) => [vaHex(m.va), m.pa, m.size, m.pageSize, m.rw, m.user, m.nx]);
      expect(rows).toEqual([
        ['0x7f0000000000', 0x100000, 3 * K, K, true, true, false],
        ['0x7f0000003000', 0x200000, K, K, true, true, false],
        ['0xffff888000000000', 0, 4 * M2, M2, true, false, true],
        ['0xffff888000800000', 0x800000, M2, M2, true, false, false],
        ['0xffff888040000000', 0x40000000, G1, G1, true, false, true],
        ['0xffffffff81000000', 0x1000000, 2 * K, K, false, false, false],
      ]);
      // bounded: only the kernel half, uncoalesced
      const part: MappedRange[] = [];
      for await (const m of p.mappings({ start: 0xffff888000400000n, end: 0xffff888000800000n, coalesce: false }))
        part.push(m);
      expect(part.map((m) => vaHex(m.va))).toEqual(['0xffff888000400000', '0xffff888000600000']);
      if (!sync) expect(mem.batches).toBeLessThan(12); // one batch per table with children, not per table
    }
  });

  it('5-level enumeration yields sign-extended 57-bit addresses', async () => {
    const b = new PageTableBuilder({ levels: 5, ramSize: 0x800000 });
    b.map(0xff11223344556000n, 0x5000, K);
    b.map(0x00ff000000000000n, 0x6000, K);
    const p = new X86Paging(b.memory(), b.dtb, 5);
    const got: string[] = [];
    for await (const m of p.mappings()) got.push(vaHex(m.va));
    expect(got).toEqual(['0xff000000000000', '0xff11223344556000']);
  });

  it('stops at maxTables', async () => {
    const { b } = randomSpace(4, 11, 30);
    const p = new X86Paging(b.memory(), b.dtb, 4);
    const gen = p.mappings({ maxTables: 3 });
    await expect(
      (async () => {
        for await (const m of gen) void m;
      })(),
    ).rejects.toMatchObject({ data: { reason: 'table_limit' } });
  });
});

describe('kernel top-table heuristics', () => {
  it('accepts kernel-only tables with entry 511, rejects user entries and junk', async () => {
    const b = new PageTableBuilder({ ramSize: 0x800000 });
    b.map(0xffff888000000000n, 0, M2, { pageSize: '2M' });
    b.map(0xffffffff81000000n, 0x1000000, K);
    const mem = b.memory();
    expect(await isKernelTopTable(mem, b.dtb, 4)).toBe(true);
    b.map(0x00007f0000000000n, 0x100000, K, { user: true });
    const c = await checkTopTable(mem, b.dtb, 4);
    expect(c.ok).toBe(false);
    expect(c.userEntries).toBe(1);
    expect((await checkTopTable(mem, b.dtb, 4, { requireEmptyUserHalf: false })).ok).toBe(true);
    expect(await isKernelTopTable(mem, 0x100000, 4)).toBe(false); // zero page
    expect(await isKernelTopTable(mem, 0x7fff000 + 0x1000000, 4)).toBe(false); // unreadable
  });
});
