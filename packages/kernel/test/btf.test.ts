import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PmiError } from '@pmi/core';
import { BtfKind, loadBtfFile, parseBtf, parseBtfFile, type Btf } from '@pmi/kernel';
import { BtfBuilder, buildKernelLike, K } from './fixtures/btf/builder.js';

function expectBtfError(f: () => unknown, re: RegExp, data: Record<string, unknown> = {}): PmiError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a PmiError').toBeInstanceOf(PmiError);
  const pe = err as PmiError;
  expect(pe.code).toBe('E_BTF');
  expect(pe.message).toMatch(re);
  for (const [k, v] of Object.entries(data)) expect(pe.data[k], k).toBe(v);
  return pe;
}

const kl = buildKernelLike();
const blob = kl.b.build();
const ids = kl.ids;

describe('parseBtf: header and every kind', () => {
  const btf = parseBtf(blob);

  it('reads the header and counts types like the builder', () => {
    expect(btf.header.magic).toBe(0xeb9f);
    expect(btf.header.hdrLen).toBe(24);
    expect(btf.typeCount).toBe(kl.b.nextId - 1);
    expect(btf.count).toBe(kl.b.nextId);
    expect(btf.kind(0)).toBe(BtfKind.VOID);
    expect(btf.name(0)).toBe('');
  });

  it('accepts a longer header (hdr_len > 24) and a gap between sections', () => {
    const b2 = parseBtf(kl.b.build({ hdrLen: 32, gap: 12 }));
    expect(b2.typeCount).toBe(btf.typeCount);
    expect(b2.fieldOffset('task_struct', 'comm')).toBe(36);
  });

  it('covers kinds 1..19', () => {
    const kinds = new Set<number>();
    for (let id = 1; id < btf.count; id++) kinds.add(btf.kind(id));
    for (let k = 1; k <= 19; k++) expect(kinds.has(k), `kind ${k}`).toBe(true);
  });

  it('INT encoding, bits, offset', () => {
    expect(btf.type(ids.char)).toMatchObject({
      kindName: 'INT',
      name: 'char',
      size: 1,
      bits: 8,
      intOffset: 0,
      encoding: { signed: false, char: true, bool: false },
    });
    expect(btf.type(ids.bool).encoding).toEqual({ signed: false, char: false, bool: true });
    expect(btf.type(ids.int3)).toMatchObject({ bits: 3, intOffset: 2, size: 4 });
  });

  it('PTR, ARRAY, FWD, TYPEDEF, qualifiers, TYPE_TAG', () => {
    expect(btf.type(ids.list_head_ptr)).toMatchObject({ kindName: 'PTR', type: ids.list_head });
    expect(btf.type(ids.comm)).toMatchObject({ kindName: 'ARRAY', type: ids.char, indexType: ids.int, nelems: 16 });
    expect(btf.type(ids.fwd_mm)).toMatchObject({ kindName: 'FWD', name: 'mm_struct', fwdKind: 'struct' });
    expect(btf.type(ids.fwd_union)).toMatchObject({ kindName: 'FWD', fwdKind: 'union' });
    expect(btf.type(ids.pid_t)).toMatchObject({ kindName: 'TYPEDEF', name: 'pid_t', type: ids.int });
    expect(btf.type(ids.const_int)).toMatchObject({ kindName: 'CONST', type: ids.int });
    expect(btf.type(ids.volatile_const_int)).toMatchObject({ kindName: 'VOLATILE', type: ids.const_int });
    expect(btf.type(ids.rptr)).toMatchObject({ kindName: 'RESTRICT', type: ids.list_head_ptr });
    expect(btf.type(ids.tagged)).toMatchObject({ kindName: 'TYPE_TAG', name: 'user', type: ids.volatile_const_int });
  });

  it('STRUCT/UNION members with kind_flag bitfields', () => {
    const t = btf.type(ids.task_struct);
    expect(t).toMatchObject({ kindName: 'STRUCT', name: 'task_struct', size: 104, vlen: 12, kindFlag: true });
    expect(t.members![1]).toEqual({ name: 'flags', type: ids.uint, bitOffset: 32, bitSize: 3 });
    expect(t.members![2]).toEqual({ name: 'in_execve', type: ids.uint, bitOffset: 35, bitSize: 1 });
    expect(t.members![3]).toEqual({ name: 'tasks', type: ids.list_head, bitOffset: 64, bitSize: 0 });
    expect(t.members![4]).toEqual({ name: '', type: ids.anon_union, bitOffset: 192, bitSize: 0 });
    expect(btf.type(ids.anon_union)).toMatchObject({ kindName: 'UNION', name: '', size: 4 });
    // list_head: no kind_flag, offsets are plain bit offsets
    expect(btf.type(ids.list_head).kindFlag).toBe(false);
    expect(btf.members('list_head').map((m) => [m.name, m.bitOffset, m.bitSize])).toEqual([
      ['next', 0, 0],
      ['prev', 64, 0],
    ]);
  });

  it('old-style bitfields (no kind_flag, INT with bits/offset)', () => {
    expect(btf.members(ids.oldbf)[0]).toMatchObject({ name: 'f', bitOffset: 2, bitSize: 3 });
  });

  it('ENUM (unsigned and signed) and ENUM64 as bigint', () => {
    expect(btf.enumValues('task_state')).toEqual([
      { name: 'TASK_RUNNING', value: 0 },
      { name: 'TASK_INTERRUPTIBLE', value: 1 },
      { name: 'TASK_DEAD', value: 0x80 },
    ]);
    expect(btf.enumValue('sgn', 'NEG')).toBe(-5);
    expect(btf.enumValue('big', 'BIG_HUGE')).toBe(0xfedcba9876543210n);
    expect(btf.enumValue('big_signed', 'BIG_NEG')).toBe(-2n);
    expect(btf.enumValue('TASK_DEAD')).toBe(0x80);
    expect(btf.enumName('task_state', 1)).toBe('TASK_INTERRUPTIBLE');
    expect(btf.enumName('big', 1n)).toBe('BIG_ONE');
    expect(() => btf.enumValue('task_state', 'NOPE')).toThrow(/no enumerator/);
  });

  it('FUNC, FUNC_PROTO (incl. variadic), VAR, DATASEC, FLOAT, DECL_TAG', () => {
    expect(btf.type(ids.func)).toMatchObject({
      kindName: 'FUNC',
      name: 'wake_up_process',
      type: ids.proto,
      linkage: 'global',
    });
    expect(btf.funcProto('wake_up_process')).toEqual({
      ret: ids.int,
      params: [
        { name: 'tsk', type: ids.task_ptr },
        { name: 'n', type: ids.int },
      ],
      variadic: false,
    });
    expect(btf.funcProto(ids.printk).variadic).toBe(true);
    expect(btf.type(ids.var_static)).toMatchObject({ kindName: 'VAR', name: 'jiffies_static', linkage: 'static' });
    expect(btf.type(ids.percpu)).toMatchObject({
      kindName: 'DATASEC',
      name: '.data..percpu',
      size: 4096,
      vars: [
        { type: ids.var_cur, offset: 0, size: 8 },
        { type: ids.var_rq, offset: 64, size: 104 },
      ],
    });
    expect(btf.type(ids.float)).toMatchObject({ kindName: 'FLOAT', name: 'double', size: 8 });
    expect(btf.type(ids.decl_tag)).toMatchObject({
      kindName: 'DECL_TAG',
      name: 'kfunc',
      type: ids.func,
      componentIdx: -1,
    });
    expect(btf.type(ids.decl_tag_member).componentIdx).toBe(6);
  });
});

describe('queries', () => {
  const btf = parseBtf(blob);

  it('findType prefers complete definitions; kind filter; not found', () => {
    const b = new BtfBuilder();
    const fwd = b.fwd('foo');
    const td = b.typedef('foo', 0);
    const st = b.struct('foo', 0, []);
    const x = parseBtf(b.build());
    expect(x.findType('foo')).toBe(st);
    expect(x.findType('foo', 'typedef')).toBe(td);
    expect(x.findType('foo', BtfKind.FWD)).toBe(fwd);
    expect(x.findTypes('foo')).toEqual([fwd, td, st]);
    expect(x.findType('bar')).toBeUndefined();
    expect(() => x.getType('bar', 'STRUCT')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
    expect(btf.findType('task_struct')).toBe(ids.task_struct);
  });

  it('resolve through typedef/type_tag/volatile/const; sizeOf', () => {
    expect(btf.resolve('u32_t')).toBe(ids.int);
    expect(btf.resolve(ids.int)).toBe(ids.int);
    expect(btf.sizeOf('task_struct')).toBe(104);
    expect(btf.sizeOf(ids.comm)).toBe(16);
    expect(btf.sizeOf(ids.matrix)).toBe(24);
    expect(btf.sizeOf(ids.task_ptr)).toBe(8);
    expect(btf.sizeOf('pid_t')).toBe(4);
    expect(btf.sizeOf('task_state')).toBe(4);
    expect(btf.sizeOf(ids.var_rq)).toBe(104);
    expect(() => btf.sizeOf(ids.fwd_mm)).toThrow(/FWD has no size/);
    expect(btf.pointee(ids.task_ptr)).toBe(ids.task_struct);
    expect(btf.array(ids.comm)).toEqual({ type: ids.char, indexType: ids.int, nelems: 16 });
  });

  it('field paths: through anonymous unions/structs, bitfields, pointers, arrays', () => {
    expect(btf.field('task_struct', 'pid')).toMatchObject({
      offset: 24,
      bitOffset: 192,
      bitSize: 0,
      type: ids.pid_t,
      size: 4,
    });
    expect(btf.field('task_struct', 'pid_alias').offset).toBe(24);
    expect(btf.field('task_struct', 'tgid').offset).toBe(28);
    expect(btf.field('task_struct', 'deep').offset).toBe(32);
    expect(btf.fieldOffset('task_struct', 'tasks')).toBe(8);
    expect(btf.fieldOffset('task_struct', 'tasks.prev')).toBe(16);
    expect(btf.field('task_struct', 'in_execve')).toMatchObject({ offset: 4, bitOffset: 35, bitSize: 1, size: 4 });
    const mm = btf.field('task_struct', 'mm');
    expect(mm).toMatchObject({ offset: 56, pointer: true, target: ids.mm_struct, derefs: [] });
    expect(btf.layout.field('mm_struct', 'pgd')).toMatchObject({ offset: 8, pointer: true, target: ids.pgd_t });
    const rl = btf.field('task_struct.signal.rlim');
    expect(rl).toMatchObject({ offset: 8, derefs: [64], type: ids.rlim_arr, size: 256 });
    expect(btf.field('task_struct', 'signal->rlim[3].rlim_max')).toMatchObject({
      offset: 8 + 3 * 16 + 8,
      derefs: [64],
    });
    expect(btf.field('task_struct', 'mm.pgd.pgd')).toMatchObject({ offset: 0, derefs: [56, 8] });
    expect(btf.field('task_struct', 'parent.parent.comm[2]')).toMatchObject({
      offset: 38,
      derefs: [72, 72],
      type: ids.char,
    });
    expect(btf.field('holder', 'm[1][2]')).toMatchObject({ offset: 56 + 12 + 8, type: ids.int });
    expect(btf.field('holder', 'ptrs[2]')).toMatchObject({ offset: 16, pointer: true, target: ids.task_struct });
    expect(btf.field('holder', 'ap[1]')).toMatchObject({ offset: 16, derefs: [48], type: ids.comm }); // ap: char (*)[16]
    expect(btf.field('task_struct', 'prio')).toMatchObject({ offset: 80, size: 4, type: ids.u32_t });
    expect(btf.field('task_struct', 'pid')).toBe(btf.field('task_struct', 'pid')); // cached
    expect(btf.hasField('task_struct', 'pid')).toBe(true);
    expect(btf.hasField('task_struct', 'nope')).toBe(false);
    expect(btf.tryField('task_struct', 'mm.nope')).toBeUndefined();
    expect(() => btf.fieldOffset('task_struct', 'signal.rlim')).toThrow(/goes through a pointer/);
    expect(() => btf.field('task_struct', 'comm.x')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
    expect(() => btf.field('task_struct', 'a..b')).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
    expect(btf.findMember('task_struct', 'deep')).toMatchObject({ bitOffset: 256, type: ids.int });
  });

  it('typeToString: C declarators', () => {
    expect(btf.typeToString(ids.list_head_ptr)).toBe('struct list_head *');
    expect(btf.typeToString(ids.comm)).toBe('char [16]');
    expect(btf.typeToString(ids.comm, 'comm')).toBe('char comm[16]');
    expect(btf.typeToString(ids.ulong)).toBe('long unsigned int');
    expect(btf.typeToString(ids.fnptr)).toBe('int (*)(struct task_struct *tsk, int n)');
    expect(btf.typeToString(ids.ptr_arr)).toBe('struct task_struct *[4]');
    expect(btf.typeToString(ids.arr_ptr)).toBe('char (*)[16]');
    expect(btf.typeToString(ids.cptr)).toBe('struct task_struct *const');
    expect(btf.typeToString(ids.rptr)).toBe('struct list_head *restrict');
    expect(btf.typeToString(ids.matrix)).toBe('int [2][3]');
    expect(btf.typeToString(ids.volatile_const_int)).toBe('volatile const int');
    expect(btf.typeToString(ids.tagged)).toBe('volatile const int');
    expect(btf.typeToString(ids.anon_union)).toBe('union {...}');
    expect(btf.typeToString(ids.fwd_mm)).toBe('struct mm_struct');
    expect(btf.typeToString(ids.printk)).toBe('void _printk(const char *fmt, ...)');
    expect(btf.typeToString(ids.var_rq)).toBe('struct task_struct runqueues');
    expect(btf.typeToString(0)).toBe('void');
    expect(btf.typeToString('task_state')).toBe('enum task_state');
    expect(btf.typeToString('big')).toBe('enum big');
  });

  it('structLayout: anonymous members expanded with depth, bitfields with bit offsets', () => {
    const l = btf.structLayout('task_struct');
    expect(l).toMatchObject({ name: 'task_struct', kind: 'struct', size: 104, id: ids.task_struct });
    const rows = l.rows.map((r) => [
      r.depth,
      r.offset,
      r.size,
      r.name,
      r.type,
      r.anon ?? '',
      r.bit_offset ?? '',
      r.bit_size ?? '',
    ]);
    expect(rows).toEqual([
      [0, 0, 4, '__state', 'unsigned int', '', '', ''],
      [0, 4, 4, 'flags', 'unsigned int', '', 32, 3],
      [0, 4, 4, 'in_execve', 'unsigned int', '', 35, 1],
      [0, 8, 16, 'tasks', 'struct list_head', '', '', ''],
      [0, 24, 4, '', 'union {...}', 'union', '', ''],
      [1, 24, 4, 'pid', 'pid_t', '', '', ''],
      [1, 24, 4, 'pid_alias', 'int', '', '', ''],
      [0, 28, 8, '', 'struct {...}', 'struct', '', ''],
      [1, 28, 4, 'tgid', 'pid_t', '', '', ''],
      [1, 32, 4, '', 'struct {...}', 'struct', '', ''],
      [2, 32, 4, 'deep', 'int', '', '', ''],
      [0, 36, 16, 'comm', 'char [16]', '', '', ''],
      [0, 56, 8, 'mm', 'struct mm_struct *', '', '', ''],
      [0, 64, 8, 'signal', 'struct signal_struct *', '', '', ''],
      [0, 72, 8, 'parent', 'struct task_struct *', '', '', ''],
      [0, 80, 4, 'prio', 'u32_t', '', '', ''],
      [0, 88, 16, 'children', 'struct list_head', '', '', ''],
    ]);
  });

  it('DATASEC / VAR: per-CPU variables', () => {
    expect(btf.percpuVar('runqueues')).toEqual({
      id: ids.var_rq,
      name: 'runqueues',
      type: ids.task_struct,
      linkage: 'global',
      section: '.data..percpu',
      offset: 64,
      size: 104,
    });
    expect(btf.percpuVar('current_task').offset).toBe(0);
    expect(btf.findVar('jiffies_static')).toMatchObject({ section: '.data', linkage: 'static' });
    expect(() => btf.percpuVar('jiffies_static')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
    expect(btf.datasec('.data..percpu').vars.map((v) => v.name)).toEqual(['current_task', 'runqueues']);
  });

  it('ids out of range throw E_BTF', () => {
    expectBtfError(() => btf.kind(btf.count), /out of range/);
    expectBtfError(() => btf.name(-1), /out of range/);
  });
});

describe('split BTF (module BTF on a base)', () => {
  const base = parseBtf(blob);
  const sb = new BtfBuilder({ startId: base.count, strStart: kl.b.strLen });
  const modStruct = sb.struct('dummy_priv', 24, [
    { name: 'list', type: ids.list_head, bits: 0 }, // base type
    { name: 'owner', type: sb.nextId + 1, bits: 128 }, // forward ref to local ptr
  ]);
  const modPtr = sb.ptr(ids.task_struct);
  const modTd = sb.typedef('task_struct', modStruct); // same name as a base type
  const reuseStr = sb.raw(K.TYPEDEF, kl.b.str('pid_t'), 0, false, ids.int); // a base string offset
  const mod = parseBtf(sb.build(), { base });

  it('ids and string offsets continue after the base', () => {
    expect(mod.startId).toBe(base.count);
    expect(modStruct).toBe(base.count);
    expect(mod.count).toBe(base.count + 4);
    expect(mod.typeCount).toBe(base.typeCount + 4);
    expect(mod.localCount).toBe(4);
    expect(mod.strStart).toBe(base.strEnd);
    expect(mod.name(modStruct)).toBe('dummy_priv');
    expect(mod.name(reuseStr)).toBe('pid_t');
    expect(mod.name(ids.task_struct)).toBe('task_struct'); // base ids through the split
  });

  it('queries cross into the base', () => {
    expect(mod.fieldOffset('dummy_priv', 'list.prev')).toBe(8);
    expect(mod.field('dummy_priv', 'owner.pid')).toMatchObject({ offset: 24, derefs: [16] });
    expect(mod.typeToString(modPtr)).toBe('struct task_struct *');
    expect(mod.findType('task_struct')).toBe(ids.task_struct);
    expect(mod.findType('task_struct', 'TYPEDEF')).toBe(modTd);
    expect(mod.findTypes('task_struct')).toEqual([ids.task_struct, modTd]);
    expect(mod.percpuVar('runqueues').offset).toBe(64);
  });

  it('split BTF without its base fails cleanly', () => {
    expectBtfError(() => parseBtf(sb.build()), /must start with a NUL|out of range|beyond/);
  });
});

describe('malformed blobs → E_BTF naming offset and type id', () => {
  const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

  it('bad magic / version / short header', () => {
    expectBtfError(() => parseBtf(new Uint8Array(10)), /shorter than the header/);
    const b = blob.slice();
    b[0] = 0;
    expectBtfError(() => parseBtf(b), /bad magic/, { offset: 0 });
    const be = blob.slice();
    be[0] = 0xeb;
    be[1] = 0x9f;
    expectBtfError(() => parseBtf(be), /big-endian/);
    const v = blob.slice();
    v[2] = 2;
    expectBtfError(() => parseBtf(v), /version 2/);
  });

  it('truncated blob: sections beyond the end', () => {
    expectBtfError(() => parseBtf(blob.subarray(0, blob.length - 1)), /string section .* beyond/, { offset: 16 });
    expectBtfError(() => parseBtf(blob.subarray(0, 100)), /type section .* beyond/, { offset: 8 });
  });

  it('type_len cutting a record', () => {
    const b = new BtfBuilder();
    b.int('int', 4, { signed: true });
    b.struct('s', 8, [
      { name: 'a', type: 1, bits: 0 },
      { name: 'b', type: 1, bits: 32 },
    ]);
    const raw = b.build();
    const d = dv(raw);
    // claim a shorter type section (the struct's second member falls outside)
    d.setUint32(12, 16 + 12 + 12, true);
    d.setUint32(16, 16 + 24 + 12, true);
    expectBtfError(() => parseBtf(raw), /STRUCT record with vlen 2 is truncated/, { type_id: 2, offset: 24 + 16 });
    d.setUint32(12, 16 + 8, true);
    expectBtfError(() => parseBtf(raw), /truncated type record/, { type_id: 2, offset: 24 + 16 });
  });

  it('unknown kind 20 (and kind 0)', () => {
    const b = new BtfBuilder();
    b.int('int', 4);
    b.raw(20, 'x', 0, false, 0);
    expectBtfError(() => parseBtf(b.build()), /unknown kind 20/, { type_id: 2, offset: 24 + 16 });
    const c = new BtfBuilder();
    c.raw(0, '', 0, false, 0);
    expectBtfError(() => parseBtf(c.build()), /unknown kind 0/, { type_id: 1, offset: 24 });
  });

  it('string offsets out of range (type name, member name)', () => {
    const b = new BtfBuilder();
    b.int('int', 4);
    b.raw(K.TYPEDEF, 9999, 0, false, 1);
    expectBtfError(() => parseBtf(b.build()), /name offset 9999 beyond the strings/, { type_id: 2 });
    const c = new BtfBuilder();
    c.int('int', 4);
    c.raw(K.STRUCT, 's', 1, false, 4, [5000, 1, 0]);
    expectBtfError(() => parseBtf(c.build()), /member 0 name offset 5000/, { type_id: 2, offset: 24 + 16 + 12 });
  });

  it('type ids out of range, wrong referenced kinds', () => {
    const cases: [(b: BtfBuilder) => void, RegExp][] = [
      [(b) => b.ptr(77), /PTR: type id 77 out of range/],
      [(b) => b.array(1, 1, 3) && b.array(99, 1, 1), /element type id 99/],
      [(b) => b.struct('s', 4, [{ name: 'a', type: 42, bits: 0 }]), /member 0 type id 42/],
      [(b) => b.funcProto(50, []), /return type id 50/],
      [(b) => b.func('f', 1), /is not a FUNC_PROTO/],
      [(b) => b.datasec('.d', 4, [[1, 0, 4]]), /entry 0 type id 1 is not a VAR/],
      [(b) => b.var('v', 0), /VAR: type id 0/],
      [(b) => b.raw(K.INT, 'i', 0, false, 3, [8]), /INT: bad size 3/],
      [(b) => b.raw(K.INT, 'i', 0, false, 4, [33]), /INT: bad bits 33/],
      [(b) => b.raw(K.ENUM, 'e', 0, false, 3), /ENUM: bad size 3/],
      [(b) => b.raw(K.DECL_TAG, 't', 0, false, 1, [-2 >>> 0]), /bad component index -2/],
    ];
    for (const [make, re] of cases) {
      const b = new BtfBuilder();
      b.int('int', 4);
      make(b);
      const e = expectBtfError(() => parseBtf(b.build()), re);
      expect(typeof e.data.type_id).toBe('number');
      expect(typeof e.data.offset).toBe('number');
    }
  });

  it('string section must start and end with NUL', () => {
    const b = new BtfBuilder();
    b.int('int', 4);
    const raw = b.build();
    raw[raw.length - 1] = 0x41;
    expectBtfError(() => parseBtf(raw), /not NUL-terminated/);
    const r2 = b.build();
    r2[24 + 16] = 0x41;
    expectBtfError(() => parseBtf(r2), /must start with a NUL/);
  });

  it('typedef cycles: resolve/sizeOf/typeToString terminate with E_BTF', () => {
    const b = new BtfBuilder();
    b.typedef('a', 2);
    b.typedef('b', 1);
    b.ptr(3); // pointer to itself
    b.array(4, 0, 2); // array of itself
    const x = parseBtf(b.build());
    expectBtfError(() => x.resolve(1), /chain too long/);
    expectBtfError(() => x.sizeOf(4), /nesting too deep/);
    expect(x.sizeOf(3)).toBe(8);
    expect(x.typeToString(3)).toMatch(/^\.\.\. \*+$/);
    expect(x.typeToString(4)).toContain('...');
  });
});

describe('file input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pmi-btf-'));

  function elfWithSections(sections: { name: string; data: Uint8Array; type?: number }[]): Uint8Array {
    // ELF64 LE: header, section data, shstrtab, section headers [null, ...sections, shstrtab]
    const names = [0];
    const nameOff: number[] = [];
    for (const s of [...sections.map((x) => x.name), '.shstrtab']) {
      nameOff.push(names.length);
      for (const c of Buffer.from(s)) names.push(c);
      names.push(0);
    }
    let off = 64;
    const placed = sections.map((s) => {
      const o = off;
      off += s.data.length;
      return o;
    });
    const strOff = off;
    off += names.length;
    off = (off + 7) & ~7;
    const shoff = off;
    const shnum = sections.length + 2;
    const out = new Uint8Array(shoff + shnum * 64);
    const d = new DataView(out.buffer);
    out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    d.setUint16(16, 2, true);
    d.setUint16(18, 62, true);
    d.setUint32(0x28, shoff, true);
    d.setUint16(0x3a, 64, true);
    d.setUint16(0x3c, shnum, true);
    d.setUint16(0x3e, shnum - 1, true);
    sections.forEach((s, i) => {
      out.set(s.data, placed[i]);
      const h = shoff + (i + 1) * 64;
      d.setUint32(h, nameOff[i], true);
      d.setUint32(h + 4, s.type ?? 1, true);
      d.setUint32(h + 0x18, placed[i], true);
      d.setUint32(h + 0x20, s.data.length, true);
    });
    out.set(names, strOff);
    const h = shoff + (shnum - 1) * 64;
    d.setUint32(h, nameOff[sections.length], true);
    d.setUint32(h + 4, 3, true);
    d.setUint32(h + 0x18, strOff, true);
    d.setUint32(h + 0x20, names.length, true);
    return out;
  }

  it('raw blob and ELF with .BTF', async () => {
    const rawPath = join(dir, 'vmlinux.btf');
    writeFileSync(rawPath, blob);
    const a = await loadBtfFile(rawPath);
    expect(a.typeCount).toBe(kl.b.nextId - 1);
    const elfPath = join(dir, 'vmlinux');
    writeFileSync(
      elfPath,
      elfWithSections([
        { name: '.text', data: new Uint8Array(100) },
        { name: '.BTF', data: blob },
      ]),
    );
    const b = await loadBtfFile(elfPath);
    expect(b.fieldOffset('task_struct', 'comm')).toBe(36);
    expect(Uint8Array.from(b.bytes)).toEqual(blob);
  });

  it('errors: no .BTF, missing file, split with base', async () => {
    expect(() => parseBtfFile(elfWithSections([{ name: '.BTF.ext', data: new Uint8Array(8) }]))).toThrow(
      /no \.BTF section/,
    );
    await expect(loadBtfFile(join(dir, 'nope'))).rejects.toMatchObject({ code: 'E_SOURCE_IO' });
    const base: Btf = parseBtf(blob);
    const sb = new BtfBuilder({ startId: base.count, strStart: kl.b.strLen });
    sb.struct('m', 16, [{ name: 'l', type: ids.list_head, bits: 0 }]);
    const p = join(dir, 'mod.btf');
    writeFileSync(p, sb.build());
    const m = await loadBtfFile(p, { base });
    expect(m.fieldOffset('m', 'l.prev')).toBe(8);
  });
});
