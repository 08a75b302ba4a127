/**
 * Ground truth from QEMU itself: a paused guest's RAM lives in a /dev/shm file that the test
 * fills from the host; QEMU's `dump-guest-memory` writes an ELF core and `info mtree -f` says
 * where each piece of that RAM file sits in guest-physical space. pmi's `qemu:` and `elf:`
 * readers must agree with both. Requires qemu-system-x86_64 (fails, never skips, without it).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normaliseRanges, openSource, type PhysRange, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources'; // registers the schemes
import { ElfCoreSource, describeSource } from '@pmi/sources';
import { QemuVm, requireQemu } from './qemu-harness.js';
import { expectSameBytes, fileBytes, hx, randInt, randomBytes, rng, tmpDir } from './helpers.js';

const M = 2 ** 20;
const G = 2 ** 30;

let work: string;
const vms = new Set<QemuVm>();
const shms = new Set<string>();

beforeAll(() => {
  requireQemu();
  work = tmpDir('pmi-qemu-dump-');
});
afterAll(async () => {
  for (const vm of vms) await vm.stop();
  for (const f of shms) fs.rmSync(f, { force: true });
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

async function withVm<T>(machine: 'pc' | 'q35', size: string, fn: (vm: QemuVm, shm: string) => Promise<T>): Promise<T> {
  const shm = `/dev/shm/pmi-src-test-${process.pid}-${machine}-${size}-${Math.random().toString(36).slice(2, 8)}`;
  shms.add(shm);
  const vm = await QemuVm.start({ machine, size, shmPath: shm, workDir: work });
  vms.add(vm);
  try {
    return await fn(vm, shm);
  } finally {
    await vm.stop();
    vms.delete(vm);
    fs.rmSync(shm, { force: true });
    shms.delete(shm);
  }
}

/** Write seeded random bytes into the (shared, mapped by QEMU) RAM file without truncating it. */
function fillShm(shm: string, offset: number, len: number, seed: number): void {
  const fd = fs.openSync(shm, 'r+');
  try {
    const chunk = 4 * M;
    for (let o = 0; o < len; o += chunk) {
      const n = Math.min(chunk, len - o);
      fs.writeSync(fd, randomBytes(seed + o / chunk, n), 0, n, offset + o);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** PT_LOADs of an ELF64 LE file, parsed straight from the spec (independent of pmi). */
function ptLoads(file: string): { paddr: number; offset: number; filesz: number }[] {
  const eh = fileBytes(file, 0, 64);
  const dv = new DataView(eh.buffer);
  const phoff = Number(dv.getBigUint64(32, true));
  const phnum = dv.getUint16(56, true);
  const ph = new DataView(fileBytes(file, phoff, phnum * 56).buffer);
  const out = [];
  for (let i = 0; i < phnum; i++) {
    if (ph.getUint32(i * 56, true) !== 1) continue;
    out.push({
      offset: Number(ph.getBigUint64(i * 56 + 8, true)),
      paddr: Number(ph.getBigUint64(i * 56 + 24, true)),
      filesz: Number(ph.getBigUint64(i * 56 + 32, true)),
    });
  }
  return out;
}

function covers(ranges: readonly PhysRange[], start: number, end: number): boolean {
  return ranges.some((r) => r.start <= start && end <= r.end);
}

function read(mem: PhysicalMemory, addr: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  mem.readSync!(addr, b);
  return b;
}

/** Compare [start, end) through elf:, qemu: and the RAM file at fileOffset, in chunks. */
function compareSpan(
  elf: PhysicalMemory,
  q: PhysicalMemory,
  shm: string,
  start: number,
  end: number,
  fileOffset: number,
) {
  for (let a = start; a < end; a += M) {
    const n = Math.min(M, end - a);
    const truth = fileBytes(shm, fileOffset + (a - start), n);
    expectSameBytes(read(q, a, n), truth, `qemu: at ${hx(a)}`);
    expectSameBytes(read(elf, a, n), truth, `elf: at ${hx(a)}`);
  }
}

describe('against QEMU dump-guest-memory', () => {
  it('64 MiB pc guest: elf: equals qemu: equals the RAM file, ranges match QEMU', async () => {
    await withVm('pc', '64M', async (vm, shm) => {
      const size = 64 * M;
      fillShm(shm, 0, size, 1234);
      const elfFile = path.join(work, 'pc-64m.elf');
      await vm.dump(elfFile);
      const regions = await vm.ramRegions();
      const summary = await vm.qmp<{ 'base-memory': number }>('query-memory-size-summary');
      expect(summary['base-memory']).toBe(size);

      const q = await openSource(`qemu:${shm}`);
      const elf = (await openSource(`elf:${elfFile}`)) as ElfCoreSource;
      try {
        expect(elf.info.kind).toBe('elf');
        // elf: ranges are exactly the PT_LOADs QEMU wrote.
        const loads = ptLoads(elfFile);
        expect(elf.info.ranges).toEqual(
          normaliseRanges(loads.map((l) => ({ start: l.paddr, end: l.paddr + l.filesz }))),
        );
        // qemu: has exactly the RAM QEMU reports: 64 MiB from physical 0, all of it below 4 GiB.
        expect(q.info.ranges).toEqual([{ start: 0, end: size }]);
        // Every RAM region in QEMU's flat view is in both sources and maps as QEMU says.
        for (const r of regions) {
          expect(covers(q.info.ranges, r.start, r.end), `qemu: covers ${hx(r.start)}`).toBe(true);
          expect(covers(elf.info.ranges, r.start, r.end), `elf: covers ${hx(r.start)}`).toBe(true);
          compareSpan(elf, q, shm, r.start, r.end, r.offset);
        }
        // What qemu: adds beyond QEMU's RAM regions is only the shadowed legacy window (ROMs in the flat view).
        let extra = 0;
        for (const r of q.info.ranges)
          for (let a = r.start; a < r.end; a += 4096)
            if (!regions.some((x) => a >= x.start && a < x.end)) {
              expect(a >= 0xa0000 && a < 0x100000, `unexpected qemu: page ${hx(a)}`).toBe(true);
              extra++;
            }
        expect(extra).toBeLessThanOrEqual((0x100000 - 0xa0000) / 4096);
        // Many random unaligned reads inside QEMU's RAM regions agree.
        const rr = rng(99);
        for (let i = 0; i < 2000; i++) {
          const reg = regions[i % regions.length];
          const len = randInt(rr, 0, Math.min(9000, reg.end - reg.start));
          const a = randInt(rr, reg.start, reg.end - len + 1);
          expectSameBytes(read(elf, a, len), read(q, a, len), `random ${hx(a)}+${len}`);
        }
        // Notes: QEMU writes an NT_PRSTATUS "CORE" note and a "QEMU" CPU-state note per vCPU.
        expect(elf.findNote('CORE', 1)).toBeDefined();
        expect(elf.findNote('QEMU', 0)).toBeDefined();
        // Sniffing: the dump is elf, the shm file is qemu.
        for (const [f, kind] of [
          [elfFile, 'elf'],
          [shm, 'qemu'],
        ]) {
          const m = await openSource(f);
          expect(m.info.kind).toBe(kind);
          await m.close();
        }
      } finally {
        await q.close();
        await elf.close();
        fs.rmSync(elfFile, { force: true });
      }
    });
  });

  /**
   * Large guests: the RAM file is sparse (only a few 64 KiB patches filled) and QEMU dumps only
   * 1 MiB windows at both ends of each RAM region (dump-guest-memory begin/length), which keeps
   * the test fast while still checking the split where it happens.
   */
  async function checkSplit(machine: 'pc' | 'q35', size: string, below: number, highLen: number) {
    await withVm(machine, size, async (vm, shm) => {
      const regions = await vm.ramRegions();
      // QEMU's own statement of the layout: the RAM file's tail sits at 4 GiB.
      const high = regions.find((r) => r.start === 4 * G);
      expect(high, `QEMU maps RAM at 4 GiB: ${JSON.stringify(regions)}`).toEqual({
        start: 4 * G,
        end: 4 * G + highLen,
        offset: below,
      });
      expect(Math.max(...regions.filter((r) => r.start < 4 * G).map((r) => r.end))).toBe(below);

      const patch = 64 * 1024;
      for (const [i, r] of regions.entries()) {
        const len = r.end - r.start;
        fillShm(shm, r.offset, Math.min(patch, len), 10 * i + 1);
        fillShm(shm, r.offset + len - Math.min(patch, len), Math.min(patch, len), 10 * i + 2);
      }
      // No machine= : the machine type is read from the running QEMU's command line.
      const q = await openSource(`qemu:${shm}`);
      try {
        expect(describeSource(q).details).toMatchObject({
          machine,
          machine_from: `command line of qemu pid ${vm.proc.pid}`,
        });
        expect(q.info.ranges).toEqual([
          { start: 0, end: below },
          { start: 4 * G, end: 4 * G + highLen },
        ]);
        for (const r of regions) expect(covers(q.info.ranges, r.start, r.end)).toBe(true);

        const windows: [number, number][] = [];
        for (const r of regions) {
          windows.push([r.start, Math.min(r.end, r.start + M)]);
          if (r.end - r.start > M) windows.push([r.end - M, r.end]);
        }
        for (const [wi, [ws, we]] of windows.entries()) {
          const elfFile = path.join(work, `${machine}-${size}-${wi}.elf`);
          await vm.dump(elfFile, { begin: ws, length: we - ws });
          const elf = await openSource(`elf:${elfFile}`);
          try {
            expect(elf.info.ranges).toEqual(
              normaliseRanges(ptLoads(elfFile).map((l) => ({ start: l.paddr, end: l.paddr + l.filesz }))),
            );
            expect(covers(elf.info.ranges, ws, we), `dump covers ${hx(ws)}-${hx(we)}`).toBe(true);
            const r = regions.find((x) => ws >= x.start && we <= x.end)!;
            // physical a ↔ RAM-file offset r.offset + (a - r.start), e.g. 4 GiB + x ↔ 3 GiB + x on pc.
            compareSpan(elf, q, shm, ws, we, r.offset + (ws - r.start));
          } finally {
            await elf.close();
            fs.rmSync(elfFile, { force: true });
          }
        }
        // The filled patches are really there (not a zeros-equal-zeros pass).
        const hiBytes = read(q, 4 * G, 4096);
        expect(hiBytes.some((b) => b !== 0)).toBe(true);
        expectSameBytes(hiBytes, fileBytes(shm, below, 4096), 'physical 4 GiB = file offset below4g');
      } finally {
        await q.close();
      }
    });
  }

  it('4 GiB pc guest: physical 4 GiB + x is RAM-file offset 3 GiB + x', async () => {
    await checkSplit('pc', '4G', 3 * G, G);
  });

  it('3 GiB q35 guest: physical 4 GiB + x is RAM-file offset 2 GiB + x', async () => {
    await checkSplit('q35', '3G', 2 * G, G);
  });

  it('2.5 GiB q35 guest stays below 4 GiB', async () => {
    await withVm('q35', '2560M', async (vm, shm) => {
      const regions = await vm.ramRegions();
      expect(regions.every((r) => r.end <= 0xa0000000)).toBe(true);
      const q = await openSource(`qemu:${shm}?machine=q35`);
      expect(q.info.ranges).toEqual([{ start: 0, end: 2560 * M }]);
      const auto = await openSource(shm); // sniffed as qemu, machine from the QEMU command line
      expect(auto.info.ranges).toEqual([{ start: 0, end: 2560 * M }]);
      expect(describeSource(auto).details).toMatchObject({ machine: 'q35' });
      await auto.close();
      for (const r of regions) expect(covers(q.info.ranges, r.start, r.end)).toBe(true);
      await q.close();
    });
  });
});

describe('QEMU harness hygiene', () => {
  it('leaves no qemu process or shm file behind', async () => {
    expect(vms.size).toBe(0);
    for (const f of shms) expect(fs.existsSync(f)).toBe(false);
    const left = fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`pmi-src-test-${process.pid}-`));
    expect(left).toEqual([]);
    // No qemu started with one of our shm paths is still alive.
    for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      let cmd = '';
      try {
        cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      expect(cmd.includes(`pmi-src-test-${process.pid}-`), `leftover process ${pid}`).toBe(false);
    }
  });
});
