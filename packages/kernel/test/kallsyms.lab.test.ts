import { readFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { BufferMemory, PmiError, openSource } from '@pmi/core';
import '@pmi/sources';
import { compareSymbols, locateKallsyms, parseSystemMap, type KernelSymbols } from '@pmi/kernel';
import type { GroundTruth } from '@pmi/lab';

const targets = inject('labTargets');

describe.each(targets.map((t) => [t.id, t] as const))('kallsyms from RAM, lab target %s', (_id, target) => {
  let ks: KernelSymbols;
  let truth: GroundTruth;

  it('decodes kallsyms from the RAM snapshot', async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    const mem = await openSource('raw:' + target.snapshot_path);
    try {
      const rss0 = process.memoryUsage().rss;
      ks = await locateKallsyms(mem);
      const rss = process.memoryUsage().rss;
      process.stderr.write(
        `[kallsyms] ${target.id} (${target.release}): ${ks.count} symbols, ${ks.layout.variant}; ` +
          `scan ${ks.timing.scanMs} ms + decode ${ks.timing.decodeMs} ms = ${ks.timing.totalMs} ms ` +
          `(${ks.timing.scannedBytes >> 20} MiB scanned, ${ks.candidates.length} digit-run hits); ` +
          `tables ${(ks.storageBytes / 1048576).toFixed(1)} MiB, RSS +${((rss - rss0) / 1048576).toFixed(0)} MiB\n`,
      );
    } finally {
      await mem.close();
    }
    expect(ks.count).toBeGreaterThan(50_000);
    // exactly one hit validates; the others are rejected with a reason
    expect(ks.candidates.filter((c) => c.ok)).toHaveLength(1);
    expect(ks.candidates.filter((c) => !c.ok).every((c) => typeof c.why === 'string')).toBe(true);
  });

  it('every core symbol of /proc/kallsyms, in order, same address and type letter', () => {
    // core = lines without a [module] tag ([bpf], [__builtin__ftrace] and modules are not in the table)
    const core = truth.kallsyms.filter((k) => k.module === undefined);
    expect(ks.count).toBe(core.length);
    const bad: string[] = [];
    let caseOnly = 0;
    for (let i = 0; i < core.length; i++) {
      const c = core[i];
      const sameType = ks.type(i) === c.type;
      if (!sameType && ks.type(i).toLowerCase() === c.type.toLowerCase()) caseOnly++;
      if (ks.name(i) !== c.name || !sameType || ks.addressHex(i) !== c.address) {
        if (bad.length < 10)
          bad.push(
            `${i}: guest ${c.address} ${c.type} ${c.name} / pmi ${ks.addressHex(i)} ${ks.type(i)} ${ks.name(i)}`,
          );
      }
    }
    expect(caseOnly, 'type letters differing only in case').toBe(0);
    expect(bad).toEqual([]);
  });

  it('names the anchors explicitly', () => {
    const core = truth.kallsyms.filter((k) => k.module === undefined);
    for (const name of [
      '_text',
      'startup_64',
      'init_task',
      'sys_call_table',
      'init_top_pgt',
      'modules',
      'prb',
      'page_offset_base',
      'linux_banner',
    ]) {
      const want = core.filter((k) => k.name === name).map((k) => BigInt(k.address));
      expect(want.length, name).toBeGreaterThan(0);
      expect(
        ks.lookup(name).map((s) => s.address),
        name,
      ).toEqual(want);
    }
    const text = ks.addressOf('_text');
    expect(ks.byAddress(text)?.address).toBe(text);
    expect(ks.byAddress(text + 1n)?.offset).toBeLessThanOrEqual(1n);
    expect(ks.symbolize(ks.addressOf('init_task') + 8n)).toBe('init_task+0x8');
    expect(ks.layout.relativeBase).toBe(text);
  });

  it('detected the layout from the data (6.12: tokens-first; 6.1: addresses-first with seqs_of_names)', () => {
    expect(ks.layout.addressKind).toBe('relative-percpu');
    expect(ks.layout.hasSeqsOfNames).toBe(true);
    expect(ks.layout.order).toBe(
      target.kernel.startsWith('6.1-') || target.kernel === '6.1' ? 'addresses-first' : 'tokens-first',
    );
  });

  it('compareSymbols against the guest /proc/kallsyms (as System.map text) finds no disagreement', () => {
    // (Debian's own System.map is a placeholder pointing at the -dbg package, so the guest's view is the file here)
    const text = truth.kallsyms
      .map((k) => `${k.address.slice(2)} ${k.type} ${k.name}${k.module ? ` [${k.module}]` : ''}`)
      .join('\n');
    const t0 = performance.now();
    const file = parseSystemMap(text);
    const cmp = compareSymbols(ks, file);
    process.stderr.write(
      `[kallsyms] ${target.id} vs /proc/kallsyms: ${cmp.agree}/${cmp.compared} names agree, ${cmp.disagreements.length} disagreements (${(performance.now() - t0).toFixed(0)} ms)\n`,
    );
    expect(cmp.slide).toBe(0n);
    expect(cmp.disagreements).toEqual([]);
    expect(cmp.agree).toBe(cmp.compared);
  });

  it('a copy of the snapshot with token_table zeroed → E_NOT_FOUND listing every hit', async () => {
    const bytes = new Uint8Array(readFileSync(target.snapshot_path));
    const tt = ks.layout.tables.tokenTable;
    bytes.fill(0, tt, ks.layout.tables.tokenIndex);
    const t0 = performance.now();
    const err = await locateKallsyms(new BufferMemory([{ start: 0, bytes }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PmiError);
    expect((err as PmiError).code).toBe('E_NOT_FOUND');
    const tried = (err as PmiError).data.tried as { ok: boolean; why?: string }[];
    expect(tried.length).toBe(ks.candidates.length - 1);
    expect(tried.every((c) => !c.ok && typeof c.why === 'string')).toBe(true);
    process.stderr.write(
      `[kallsyms] ${target.id} zeroed token_table: E_NOT_FOUND in ${(performance.now() - t0).toFixed(0)} ms (${tried.length} hits rejected)\n`,
    );
  });
});
