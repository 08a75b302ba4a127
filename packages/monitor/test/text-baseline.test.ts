/**
 * Text page hashing with patch-site masking, and the baseline file's errors — on synthetic pages
 * where the truth is known by construction.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SymbolTableBuilder, type DiscoveredKernel } from '@pmi/kernel';
import {
  compareDigests,
  exitCodeOf,
  hashPages,
  readBaseline,
  writeBaseline,
  type Baseline,
  type PatchSite,
  type TextLayout,
} from '../src/index.js';

const TEXT = 0xffffffff81000000n;
const b = new SymbolTableBuilder();
b.add('_stext', 'T', TEXT);
b.add('func_a', 'T', TEXT + 0x100n);
b.add('func_b', 'T', TEXT + 0x1000n);
b.add('_etext', 'T', TEXT + 0x2000n);
const d = { symbols: b.build() } as unknown as DiscoveredKernel;
const layout: TextLayout = { spans: [{ name: 'text', start: TEXT, end: TEXT + 0x2000n }], pages: 2 };

function pages(): Uint8Array {
  const p = new Uint8Array(0x2000);
  for (let i = 0; i < p.length; i++) p[i] = (i * 7 + 3) & 0xff;
  return p;
}
const NOP5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];
const sites: PatchSite[] = [
  { va: TEXT + 0x120n, len: 5, kind: 'static_key', target: TEXT + 0x180n },
  { va: TEXT + 0x1010n, len: 5, kind: 'ftrace' },
];
function withSites(p: Uint8Array): Uint8Array {
  p.set(NOP5, 0x120);
  p.set(NOP5, 0x1010);
  return p;
}

describe('text page hashes with masked patch sites', () => {
  const base = withSites(pages());
  const baseDigests = hashPages(d, layout, 0, base, sites, []);

  it('a static key flipped to its jmp and an ftrace site turned into a call: same hashes, no problem', () => {
    const now = withSites(pages());
    now.set([0xe9, ...int32(0x180 - (0x120 + 5))], 0x120); // jmp to the entry's target
    now.set([0xe8, ...int32(0x1800 - (0x1010 + 5))], 0x1010); // call into core text
    const problems: { site: PatchSite; problem: string }[] = [];
    const dg = hashPages(d, layout, 0, now, sites, problems);
    expect(problems).toEqual([]);
    expect(compareDigests(d, layout, 0, dg, baseDigests)).toEqual([]);
  });

  it('a static-key site jumping elsewhere is a problem, named at the site', () => {
    const now = withSites(pages());
    now.set([0xe9, ...int32(0x1f00 - (0x120 + 5))], 0x120);
    const problems: { site: PatchSite; problem: string }[] = [];
    hashPages(d, layout, 0, now, sites, problems);
    expect(problems).toHaveLength(1);
    expect(problems[0].problem).toMatch(/static-key jmp to func_b\+0xf00, entry says func_a\+0x80/);
  });

  it('one byte changed outside the sites: exactly that page, with its symbol', () => {
    const now = withSites(pages());
    now[0x1500] ^= 0xff;
    const f = compareDigests(d, layout, 0, hashPages(d, layout, 0, now, sites, []), baseDigests);
    expect(f.map((x) => [x.address, x.symbol, x.kind])).toEqual([['0xffffffff81001000', 'func_b', 'tampering']]);
    expect(exitCodeOf([{ check: 'text', findings: f, warnings: [], partial: false, ms: 0 }])).toBe(4);
  });
});

describe('baseline files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pmi-baseline-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips, and rejects what is not a baseline with a typed error naming the file', () => {
    const p = join(dir, 'b.json');
    const bl: Baseline = {
      format: 'pmi-baseline',
      version: 1,
      created: new Date().toISOString(),
      target: 'raw:/x',
      kernel: { release: 'r', banner: 'Linux version r', kaslr_slide: '0x0', text: '0x1', levels: 4 },
      checks: { idt: { va: '0x1', sha256: 'x', bytes: '' } },
    };
    writeBaseline(p, bl);
    expect(readBaseline(p)).toEqual(bl);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"format":"something-else"}');
    expect(() => readBaseline(bad)).toThrow(/bad\.json is not a pmi baseline/);
    writeFileSync(bad, '{not json');
    expect(() => readBaseline(bad)).toThrow(expect.objectContaining({ code: 'E_SOURCE_FORMAT' }));
    expect(() => readBaseline(join(dir, 'missing.json'))).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });

  it('exit codes: tampering (4) wins over partial (3); warnings alone are clean', () => {
    const t = {
      check: 'a',
      kind: 'tampering' as const,
      severity: 'high' as const,
      address: null,
      symbol: null,
      evidence: '',
      key: 'k',
    };
    const w = { ...t, kind: 'warning' as const };
    expect(exitCodeOf([{ check: 'a', findings: [w], warnings: [], partial: false, ms: 0 }])).toBe(0);
    expect(exitCodeOf([{ check: 'a', findings: [w], warnings: [], partial: true, ms: 0 }])).toBe(3);
    expect(
      exitCodeOf([
        { check: 'a', findings: [], warnings: [], partial: true, ms: 0 },
        { check: 'b', findings: [t], warnings: [], partial: false, ms: 0 },
      ]),
    ).toBe(4);
  });
});

function int32(v: number): number[] {
  const x = Buffer.alloc(4);
  x.writeInt32LE(v);
  return [...x];
}
