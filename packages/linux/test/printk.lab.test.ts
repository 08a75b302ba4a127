/**
 * The kernel log against the guest's own `dmesg` (busybox, "[%5lu.%06lu] text" lines): the recorded
 * truth on the snapshot (raw:) and nettlp://, a fresh dmesg and a /dev/kmsg marker on the live RAM
 * (qemu:) without a new snapshot, the follow poller, a copy with a zeroed descriptor ring, and a ring
 * that wrapped (more records written than it has descriptors: old records overwritten, the data ring
 * wrapped — and on 5.10, whose record ids start just below 2^32, ids past 2^32).
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
import { openLabVm, type GroundTruth } from '@pmi/lab';
import { dmesgLines, followKernelLog, readKernelLog, type LogRecord } from '../src/index.js';
import { releaseAtLeast } from './lab-expect.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-printk-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const PMI = join(__dirname, '../../cli/bin/pmi.js');

/** Index where `part` occurs as a contiguous run inside `whole`, or -1. */
function indexOfRun(whole: readonly string[], part: readonly string[]): number {
  outer: for (let i = 0; i + part.length <= whole.length; i++) {
    for (let j = 0; j < part.length; j++) if (whole[i + j] !== part[j]) continue outer;
    return i;
  }
  return -1;
}

describe.each(targets.map((t) => [t.id, t] as const))('dmesg, lab target %s', (_id, target) => {
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

  it("the snapshot's log ends with the guest's recorded dmesg tail, same timestamps", async () => {
    const t0 = performance.now();
    const r = await readKernelLog(k);
    const ms = performance.now() - t0;
    process.stderr.write(`[printk] ${target.id}: ${r.records.length} records (${r.format}) in ${ms.toFixed(1)} ms\n`);
    // the lockless ring from 5.10 (its single text data ring and 2-bit descriptor states on every lab
    // kernel, 5.10 included); the legacy log_buf before — no lab kernel has it
    expect(r.format).toBe(releaseAtLeast(target.release, 5, 10) ? 'prb' : 'legacy');
    expect(r.warnings).toEqual([]);
    expect(r.records[0].text).toMatch(/^Linux version /);
    // seq strictly increasing, timestamps non-decreasing
    for (let i = 1; i < r.records.length; i++) expect(r.records[i].seq).toBeGreaterThan(r.records[i - 1].seq);
    const lines = r.records.flatMap(dmesgLines);
    const tail = truth.dmesg_tail;
    expect(tail.length).toBeGreaterThan(10);
    const at = indexOfRun(lines, tail);
    expect(at, `tail not found; ours ends with ${JSON.stringify(lines.slice(-5))}`).toBeGreaterThanOrEqual(0);
    // the snapshot was taken after the truth: only lines logged after it may follow
    const after = lines.length - (at + tail.length);
    expect(after).toBeLessThanOrEqual(20);
  });

  it('the same records over nettlp://', async () => {
    const remote = await openSnapshotOverNettlp(target);
    try {
      const t0 = performance.now();
      const r = await readKernelLog(remote.k);
      process.stderr.write(
        `[printk] ${target.id}: nettlp:// ${r.records.length} records in ${(performance.now() - t0).toFixed(0)} ms\n`,
      );
      expect(r.records).toEqual((await readKernelLog(k)).records);
    } finally {
      await remote.close();
    }
  });

  it('live RAM (qemu:): a fresh dmesg and a /dev/kmsg marker at level 3, no new snapshot; the poller sees a later marker', async () => {
    const vm = await openLabVm(target.name);
    const live = await openLabKernel(target.source_uri, target);
    try {
      const marker = `pmi-marker-${Math.random().toString(36).slice(2, 10)}`;
      const out = await vm.run(`echo '<3>${marker}' > /dev/kmsg; dmesg | tail -n 30`);
      expect(out.exitCode).toBe(0);
      const guest = out.stdout.split('\n').filter((l) => l.length > 0);
      const r = await readKernelLog(live.k);
      const lines = r.records.flatMap(dmesgLines);
      expect(
        indexOfRun(lines, guest),
        JSON.stringify({ guest: guest.slice(-3), ours: lines.slice(-3) }),
      ).toBeGreaterThanOrEqual(0);
      const m = r.records.filter((x) => x.text === marker);
      expect(m.length).toBe(1);
      expect(m[0].level).toBe(3);
      expect(m[0].facility).toBe(1); // /dev/kmsg writes default to LOG_USER
      expect(m[0].caller).toMatch(/^T\d+$/);

      // follow: the poller started first, the marker is written afterwards
      const marker2 = `pmi-follow-${Math.random().toString(36).slice(2, 10)}`;
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 60_000);
      const seen: LogRecord[] = [];
      const t0 = performance.now();
      let tSeen = 0;
      const follow = (async () => {
        for await (const rec of followKernelLog(live.k, { signal: ac.signal, intervalMs: 100 })) {
          seen.push(rec);
          if (rec.text === marker2) {
            tSeen = performance.now();
            ac.abort();
          }
        }
      })();
      await new Promise((res) => setTimeout(res, 300));
      const tWrite = performance.now();
      await vm.run(`echo '<4>${marker2}' > /dev/kmsg`);
      await follow;
      clearTimeout(timer);
      const hit = seen.find((x) => x.text === marker2);
      expect(hit, `seen: ${JSON.stringify(seen.map((s) => s.text))}`).toBeDefined();
      expect(hit!.level).toBe(4);
      expect(seen.some((x) => x.text === marker)).toBe(false); // only records after the start
      process.stderr.write(
        `[printk] ${target.id}: follow saw the marker ${(tSeen - tWrite).toFixed(0)} ms after the write was sent (started ${(tWrite - t0).toFixed(0)} ms before)\n`,
      );
    } finally {
      await live.mem.close();
    }
  });

  it('a zeroed descriptor ring: no rows, a warning, exit 3, no hang', async () => {
    const prb = (await k.globalValue('prb')) as bigint;
    const R = k.layout('printk_ringbuffer', ['desc_ring.count_bits', 'desc_ring.descs']);
    const ring = await k.read(prb, R);
    const count = 1 << ring.num('desc_ring.count_bits');
    const descs = ring.ptr('desc_ring.descs');
    const bytes = count * k.btf.sizeOf('prb_desc');
    const copy = join(scratch, `${target.name}-zeroed.raw`);
    execFileSync('cp', ['--sparse=always', target.snapshot_path, copy]);
    const fd = openSync(copy, 'r+');
    for (let off = 0; off < bytes;) {
      const va = descs + BigInt(off);
      const len = Math.min(4096 - Number(va & 0xfffn), bytes - off);
      writeSync(fd, Buffer.alloc(len), 0, len, await k.paging.translate(va));
      off += len;
    }
    closeSync(fd);
    try {
      const bad = await openLabKernel('raw:' + copy, target);
      const t0 = performance.now();
      const r = await readKernelLog(bad.k);
      await bad.mem.close();
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(r.records).toEqual([]);
      expect(r.warnings.join(' ')).toMatch(/do not carry their id/);
      const cli = spawnSync(process.execPath, [PMI, '--source', 'raw:' + copy, '--json', 'dmesg'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(cli.status, cli.stderr).toBe(3);
      const doc = JSON.parse(cli.stdout) as { rows: unknown[]; warnings: string[] };
      expect(doc.rows).toEqual([]);
      expect(doc.warnings.join(' ')).toMatch(/do not carry their id/);
    } finally {
      rmSync(copy, { force: true });
    }
  });

  it('a wrapped ring (the guest writes more records than it has descriptors): live RAM equals the full guest dmesg', async () => {
    const vm = openLabVm(target.name);
    const live = await openLabKernel(target.source_uri, target);
    try {
      const R = live.k.layout('printk_ringbuffer', [
        'desc_ring.count_bits',
        'desc_ring.head_id',
        'text_data_ring.size_bits',
      ]);
      const before = await live.k.read((await live.k.globalValue('prb')) as bigint, R);
      const count = 1 << before.num('desc_ring.count_bits');
      const n = count + 256;
      const tag = `pmi-wrap-${Math.random().toString(36).slice(2, 8)}`;
      // level 7 (debug): not echoed on the console; one open of /dev/kmsg per record (its rate limit is per open)
      const t0 = performance.now();
      const w = await vm.run(`i=0; while [ $i -lt ${n} ]; do echo "<7>${tag} $i" > /dev/kmsg; i=$((i+1)); done`, {
        timeoutMs: 300_000,
      });
      expect(w.exitCode).toBe(0);
      const tWrite = performance.now() - t0;
      const out = await vm.run('dmesg', { timeoutMs: 120_000 });
      const guest = out.stdout.split('\n').filter((l) => l.length > 0);
      const r = await readKernelLog(live.k);
      const after = await live.k.read((await live.k.globalValue('prb')) as bigint, R);
      expect(r.warnings).toEqual([]);
      const lines = r.records.flatMap(dmesgLines);
      // the ring wrapped: the boot records are gone, the oldest record is one of ours
      expect(r.records[0].seq).toBeGreaterThan(0);
      expect(r.records.some((x) => /^Linux version /.test(x.text))).toBe(false);
      expect(r.records.filter((x) => x.text.startsWith(tag + ' ')).length).toBeGreaterThan(count / 2);
      expect(r.records.filter((x) => x.text.startsWith(tag + ' ')).at(-1)?.text).toBe(`${tag} ${n - 1}`);
      // ours equals the guest's dmesg from the first record both have: the guest's may start later (busybox
      // reads the newest records that fit log_buf_len bytes once formatted) or earlier (records logged
      // between the two reads overwrote a few); ours was read last, so it holds all of the guest's
      const iOurs = lines.indexOf(guest[0]);
      const iGuest = guest.indexOf(lines[0]);
      expect(iOurs >= 0 || iGuest >= 0, `no common first line: ${lines[0]} / ${guest[0]}`).toBe(true);
      const [ours, theirs] = iOurs >= 0 ? [lines.slice(iOurs), guest] : [lines, guest.slice(iGuest)];
      expect(iOurs >= 0 ? 0 : iGuest).toBeLessThanOrEqual(20);
      expect(theirs.length).toBeGreaterThan(count / 2);
      expect(ours.slice(0, theirs.length)).toEqual(theirs);
      expect(ours.length - theirs.length).toBeLessThanOrEqual(20);
      const gaps = r.records.flatMap((x, i) => (i > 0 && x.seq !== r.records[i - 1].seq + 1 ? [x.seq] : []));
      expect(gaps).toEqual([]);
      const hex = (v: bigint) => '0x' + v.toString(16);
      process.stderr.write(
        `[printk] ${target.id}: ${n} records written in ${tWrite.toFixed(0)} ms; ring of ${count} descriptors, ` +
          `2^${after.num('text_data_ring.size_bits')} data bytes; head_id ${hex(before.ptr('desc_ring.head_id'))} → ` +
          `${hex(after.ptr('desc_ring.head_id'))}; ${r.records.length} records read (seq ${r.records[0].seq}..${r.records.at(-1)!.seq}), ` +
          `${guest.length} guest dmesg lines (the first common line is our ${iOurs >= 0 ? iOurs : 0}th, the guest's ${iOurs >= 0 ? 0 : iGuest}th)\n`,
      );
    } finally {
      await live.mem.close();
    }
  });
});
