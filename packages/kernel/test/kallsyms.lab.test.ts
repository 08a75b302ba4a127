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
    // image VA − PA from the guest's own view: its _text and /proc/iomem "Kernel code" start
    const code = truth.iomem.find((r) => r.name === 'Kernel code')!;
    if (ks.layout.addressKind === 'self-relative') expect(ks.layout.virtDelta).toBe(text - BigInt(code.start));
    else expect(ks.layout.relativeBase).toBe(text);
  });

  it('detected the layout from the data: what the kernel version implies, and table positions where the guest names them', () => {
    // What scripts/kallsyms.c of each lab kernel emits (README-kallsyms.md, "Layouts as observed").
    const expected: Record<string, { order: string; kind: string; seqs: boolean }> = {
      '5.10': { order: 'addresses-first', kind: 'relative-percpu', seqs: false },
      '6.1-cloud': { order: 'addresses-first', kind: 'relative-percpu', seqs: true }, // 6.1.192 backports seqs
      '6.12': { order: 'tokens-first', kind: 'relative-percpu', seqs: true },
      '7.x': { order: 'tokens-first', kind: 'self-relative', seqs: true },
    };
    expect({ order: ks.layout.order, kind: ks.layout.addressKind, seqs: ks.layout.hasSeqsOfNames }).toEqual(
      expected[target.kernel],
    );
    // Kernels from 6.2 list the tables themselves in /proc/kallsyms (5.10 and 6.1 do not): every table pmi
    // found must sit exactly at the guest's symbol, through VA − PA = _text − "Kernel code" start.
    const core = truth.kallsyms.filter((k) => k.module === undefined);
    const delta =
      BigInt(core.find((k) => k.name === '_text')!.address) -
      BigInt(truth.iomem.find((r) => r.name === 'Kernel code')!.start);
    const t = ks.layout.tables;
    const pairs: [string, number | undefined][] = [
      ['kallsyms_num_syms', t.numSyms],
      ['kallsyms_names', t.names],
      ['kallsyms_markers', t.markers],
      ['kallsyms_token_table', t.tokenTable],
      ['kallsyms_token_index', t.tokenIndex],
      [ks.layout.addressKind === 'absolute' ? 'kallsyms_addresses' : 'kallsyms_offsets', t.addresses],
      ['kallsyms_relative_base', t.relativeBase],
      ['kallsyms_seqs_of_names', t.seqsOfNames],
    ];
    const named = pairs.filter(([name]) => core.some((k) => k.name === name));
    process.stderr.write(
      `[kallsyms] ${target.id}: ${ks.layout.variant}; tables named in /proc/kallsyms: ${named.map(([n]) => n).join(', ') || 'none'}\n`,
    );
    for (const [name, pa] of named) {
      expect(pa, `${name} found by pmi`).toBeDefined();
      expect('0x' + (BigInt(pa!) + delta).toString(16), name).toBe(core.find((k) => k.name === name)!.address);
    }
    // scripts/kallsyms.c filtered its own tables out until 6.2; 6.12 and 7.x list them.
    if (target.kernel === '5.10' || target.kernel === '6.1-cloud') expect(named).toEqual([]);
    else expect(named.length).toBeGreaterThanOrEqual(6);
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
