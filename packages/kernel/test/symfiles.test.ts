import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { BufferMemory, PmiError } from '@pmi/core';
import {
  buildKallsymsImage,
  compareSymbols,
  locateKallsyms,
  parseIsf,
  parseJsonLossless,
  parseSystemMap,
  readIsfFile,
  type SynthSymbol,
} from '@pmi/kernel';

const dir = mkdtempSync(join(tmpdir(), 'pmi-symfiles-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// 18446744071562067968 = 0xffffffff80000000; JSON.parse rounds 18446744071562067969 to …968.
const ISF = `{
  "metadata": {"format": "6.2.0", "producer": {"name": "dwarf2json", "version": "0.8.0"}},
  "base_types": {"int": {"size": 4, "signed": true, "kind": "int", "endian": "little"}},
  "user_types": {
    "list_head": {"kind": "struct", "size": 16, "fields": {
      "next": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}},
      "prev": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}}}},
    "task_struct": {"kind": "struct", "size": 9792, "fields": {
      "comm": {"offset": 2976, "type": {"kind": "array", "count": 16, "subtype": {"kind": "base", "name": "char"}}},
      "tasks": {"offset": 2256, "type": {"kind": "struct", "name": "list_head"}},
      "flag": {"offset": 40, "type": {"kind": "bitfield", "bit_position": 3, "bit_length": 1, "type": {"kind": "base", "name": "unsigned int"}}}}}
  },
  "enums": {},
  "symbols": {
    "_text": {"address": 18446744071562067968},
    "init_task": {"address": 18446744071600000001, "type": {"kind": "struct", "name": "task_struct"}},
    "odd_name \\" 18446744071562067969": {"address": 18446744071562067969},
    "small": {"address": 4096},
    "linux_banner": {"address": 18446744071590000000, "constant_data": "${Buffer.from('Linux version 6.12.0\0').toString('base64')}"}
  }
}`;

describe('lossless JSON', () => {
  it('keeps integers above 2^53 exact as bigint, leaves strings and small numbers alone', () => {
    expect(JSON.parse('{"a": 18446744071562067969}').a).toBe(2 ** 64 - 2 ** 31); // the problem: rounded
    const v = parseJsonLossless(
      '{"a": 18446744071562067969, "b": [1, -9007199254740993, 2.5, 1e300, 12345678901234567.5], "s": "x 18446744071562067969", "t": "q\\\\", "c": 18446744073709551615}',
    ) as Record<string, unknown>;
    expect(v.a).toBe(18446744071562067969n);
    expect(v.b).toEqual([1, -9007199254740993n, 2.5, 1e300, Number('12345678901234567.5')]);
    expect(v.s).toBe('x 18446744071562067969');
    expect(v.t).toBe('q\\');
    expect(v.c).toBe(18446744073709551615n);
    expect(() => parseJsonLossless('{"a": }')).toThrow(PmiError);
  });
});

describe('ISF', () => {
  it('reads symbols exactly and user_types as {structs: {name: {size, fields}}}', () => {
    const isf = parseIsf(ISF);
    expect(isf.symbols.addressOf('_text')).toBe(0xffffffff80000000n);
    expect(isf.symbols.addressOf('init_task')).toBe(18446744071600000001n);
    expect(isf.symbols.addressOf('odd_name " 18446744071562067969')).toBe(18446744071562067969n);
    expect(isf.symbols.addressOf('small')).toBe(4096n);
    expect(isf.symbolTypes.get('init_task')).toBe('struct task_struct');
    expect(isf.banners).toEqual(['Linux version 6.12.0']);
    expect(isf.producer).toBe('dwarf2json 0.8.0');
    expect(isf.structs.task_struct.size).toBe(9792);
    expect(isf.structs.task_struct.fields.comm).toEqual({ offset: 2976, type: 'char[16]' });
    expect(isf.structs.task_struct.fields.tasks).toEqual({ offset: 2256, type: 'struct list_head' });
    expect(isf.structs.task_struct.fields.flag).toMatchObject({ offset: 40, bitPosition: 3, bitLength: 1 });
    expect(isf.structs.list_head.fields.next.type).toBe('struct list_head *');
    expect(() => parseIsf('{"x": 1}')).toThrow(/not an ISF/);
  });

  it('reads .json, .json.gz and .json.xz files', async () => {
    const p = join(dir, 'k.json');
    writeFileSync(p, ISF);
    writeFileSync(p + '.gz', gzipSync(Buffer.from(ISF)));
    let xz = true;
    try {
      execFileSync('xz', ['-k', '-f', p]);
    } catch {
      xz = false;
    }
    for (const f of [p, p + '.gz', ...(xz ? [p + '.xz'] : [])]) {
      const isf = await readIsfFile(f);
      expect(isf.symbols.addressOf('init_task'), f).toBe(18446744071600000001n);
    }
    await expect(readIsfFile(join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'E_SOURCE_IO' });
    writeFileSync(join(dir, 'bad.json.xz'), 'not xz');
    if (xz) await expect(readIsfFile(join(dir, 'bad.json.xz'))).rejects.toBeInstanceOf(PmiError);
  });
});

describe('System.map', () => {
  it('parses address, type, name; /proc/kallsyms module lines are skipped unless asked', () => {
    const t = parseSystemMap(
      'ffffffff81000000 T _text\nffffffff81000000 T startup_64\n0000000000001000 A cpu_debug_store\n\nffffffffc0000000 t dummy_init\t[dummy]\n',
    );
    expect(t.count).toBe(3);
    expect(t.symbol(0)).toEqual({ index: 0, name: '_text', type: 'T', address: 0xffffffff81000000n });
    expect(t.addressOf('cpu_debug_store')).toBe(0x1000n);
    expect(parseSystemMap('ffffffffc0000000 t dummy_init [dummy]\n', { modules: true }).count).toBe(1);
    expect(() => parseSystemMap('hello world\n')).toThrow(/line 1/);
    expect(() => parseSystemMap('')).toThrow(PmiError);
  });
});

describe('compareSymbols', () => {
  const linkTime: SynthSymbol[] = [
    { name: 'fixed_percpu_data', type: 'A', address: 0n },
    { name: '_text', type: 'T', address: 0xffffffff81000000n },
    { name: 'startup_64', type: 'T', address: 0xffffffff81000000n },
    { name: 'helper', type: 't', address: 0xffffffff81001000n },
    { name: 'helper', type: 't', address: 0xffffffff81002000n },
    { name: 'init_task', type: 'D', address: 0xffffffff82000000n },
    { name: 'c0123456789', type: 'b', address: 0xffffffff83000000n },
  ];
  const slide = 0x2a400000n;
  const mapText = (syms: SynthSymbol[]): string =>
    syms.map((s) => `${s.address.toString(16).padStart(16, '0')} ${s.type} ${s.name}`).join('\n');

  it('finds the KASLR slide from _text, reports every disagreement, memory wins by default', async () => {
    const runtime = linkTime.map((s) => ({ ...s, address: s.type === 'A' ? s.address : s.address + slide }));
    runtime[5] = { ...runtime[5], address: runtime[5].address + 0x40n }; // init_task moved (e.g. a patched map)
    runtime[6] = { ...runtime[6], type: 'B' };
    runtime.push({ name: 'only_in_memory', type: 'T', address: 0xffffffff84000000n + slide });
    const img = buildKallsymsImage(runtime, { layout: 'tokens-first', absolutePercpu: true, seed: 11 });
    const mem = await locateKallsyms(new BufferMemory([{ start: 0, bytes: img.bytes }]));
    const file = parseSystemMap(
      mapText([...linkTime, { name: 'only_in_file', type: 'T', address: 0xffffffff85000000n }]),
    );
    const cmp = compareSymbols(mem, file);
    expect(cmp.slide).toBe(slide);
    expect(cmp.slideSource).toBe('_text');
    const by = Object.fromEntries(cmp.disagreements.map((d) => [d.name, d]));
    expect(by.init_task.kind).toBe('address');
    expect(by.init_task.memory).toEqual(['0x' + (0xffffffff82000040n + slide).toString(16)]);
    expect(by.init_task.file).toEqual(['0xffffffff82000000']);
    expect(by.c0123456789).toMatchObject({ kind: 'type', memoryType: 'B', fileType: 'b' });
    expect(by.only_in_memory.kind).toBe('missing-in-file');
    expect(by.only_in_file.kind).toBe('missing-in-memory');
    expect(by.helper).toBeUndefined(); // both copies agree
    expect(by.fixed_percpu_data).toBeUndefined(); // absolute: not shifted
    expect(cmp.onlyInFile).toBe(1);
    expect(cmp.onlyInMemory).toBe(1);
    expect(cmp.resolve('init_task')).toBe(0xffffffff82000040n + slide);
    expect(compareSymbols(mem, file, { prefer: 'file' }).resolve('init_task')).toBe(0xffffffff82000000n + slide);
    expect(compareSymbols(mem, file, { slide: 0n }).disagreements.filter((d) => d.kind === 'address').length).toBe(5);
  });
});
