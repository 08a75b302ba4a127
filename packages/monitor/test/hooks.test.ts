/**
 * The hooks check's decisions (pure functions: where an address lies, which functions are on the
 * system-call path, what a hook means, what changed since a baseline) and its walks over synthetic
 * kernels built by hand in scratch memory (BTF shaped like the kernel's): notifier chains, ftrace
 * ops with a filter hash, the kprobe hash table — including a cycle, a NULL link and a table bounded
 * by the next symbol, which must give warnings and `partial`, never a hang or a throw.
 */
import { describe, expect, it } from 'vitest';
import {
  CountingMemory,
  KernelObjects,
  KernelScratchMemory,
  SymbolTableBuilder,
  X86Paging,
  parseBtf,
} from '@pmi/kernel';
import {
  symbolBaseName,
  diffHooks,
  enumerateHooks,
  hookKey,
  hooksCheck,
  hooksState,
  onSyscallPath,
  judgeHook,
  kprobeTableSize,
  locateAddress,
  type HookAddressMap,
  type CheckContext,
  type HookRecord,
  type HookLocation,
  type HookTarget,
} from '../src/index.js';
import { BtfBuilder } from '../../kernel/test/fixtures/btf/builder.js';

const TEXT = 0xffffffff81000000n;
const MOD = 0xffffffffc0100000n;

const MAP: HookAddressMap = {
  textStart: TEXT,
  textEnd: TEXT + 0x1000000n,
  imageStart: TEXT - 0x0n,
  imageEnd: TEXT + 0x3000000n,
  modules: [
    {
      name: 'nf_conntrack',
      text: [{ base: MOD, size: 0x4000n }],
      all: [
        { base: MOD, size: 0x4000n },
        { base: MOD + 0x4000n, size: 0x2000n },
      ],
    },
  ],
  directMap: 0xffff888000000000n,
  vmalloc: 0xffffc90000000000n,
  vmemmap: 0xffffea0000000000n,
};

describe('locateAddress: where an address lies', () => {
  it.each([
    [0n, 'null'],
    [TEXT + 0x1234n, 'core_text'],
    [MOD + 0x10n, 'module_text'],
    [MOD + 0x4100n, 'module_data'],
    [TEXT + 0x2000000n, 'kernel_image'],
    [0xffffffffc8000000n, 'module_area'],
    [0xffff888001234560n, 'direct_map'],
    [0xffffc90000123000n, 'vmalloc'],
    [0x00007fffdeadbeefn, 'user'],
    [0xffffea0000001000n, 'unknown'],
  ] as [bigint, HookLocation][])('%s → %s', (va, loc) => {
    expect(locateAddress(MAP, va).location).toBe(loc);
  });

  it('names the module and the offset from its text', () => {
    expect(locateAddress(MAP, MOD + 0x4100n)).toEqual({
      location: 'module_data',
      module: 'nf_conntrack',
      moduleOffset: 0x4100n,
    });
  });

  it('without direct-map/vmalloc bases: heap addresses are unknown, never text', () => {
    const m = { ...MAP, directMap: undefined, vmalloc: undefined, vmemmap: undefined };
    expect(locateAddress(m, 0xffff888001234560n).location).toBe('unknown');
  });
});

describe('onSyscallPath', () => {
  it.each([
    '__x64_sys_getdents64',
    '__x64_sys_getdents64+0x4',
    '__do_sys_getppid',
    '__se_sys_kill.isra.0',
    '__ia32_compat_sys_execve',
    'x64_sys_call',
    'x64_sys_call+0x1a20',
    'do_syscall_64',
    'entry_SYSCALL_64_after_hwframe',
  ])('%s is on the syscall path', (n) => expect(onSyscallPath(n)).toBe(true));
  it.each(['tcp4_seq_show', 'filldir64', 'vfs_read', 'sys_copyarea', 'do_syscall_trace', 'my__x64_sys_read'])(
    '%s is not',
    (n) => expect(onSyscallPath(n)).toBe(false),
  );
  it('symbolBaseName strips offsets, module suffixes and compiler suffixes', () => {
    expect(symbolBaseName('dummy_xmit+0x10 [dummy]')).toBe('dummy_xmit');
    expect(symbolBaseName('__do_sys_kill.constprop.0+0x4')).toBe('__do_sys_kill');
  });
});

const t = (va: bigint, location: HookLocation, symbol: string, module?: string): HookTarget =>
  module ? { va, location, symbol, module } : { va, location, symbol };
const core = (name: string, off = 0x100n) => t(TEXT + off, 'core_text', name);
const mod = (name: string) => t(MOD + 0x20n, 'module_text', `${name}+0x0 [rk]`, 'rk');
const heap = t(0xffff888001234560n, 'direct_map', '0xffff888001234560');

function hook(p: Partial<HookRecord> & Pick<HookRecord, 'kind' | 'where' | 'role' | 'target'>): HookRecord {
  return { object: 0xffff888000100000n, ...p };
}

describe('judgeHook: what one hook means on its own', () => {
  const filter = (fns: string[]) => ({
    count: fns.length,
    functions: fns,
    syscalls: fns.filter(onSyscallPath),
    truncated: false,
    direct: [],
  });

  it('a callback outside kernel and module text is tampering (high); LSM critical', () => {
    for (const kind of ['ftrace', 'kprobe', 'netfilter', 'notifier'] as const) {
      const f = judgeHook(hook({ kind, where: 'x', role: 'r', target: heap }));
      expect(f).toMatchObject({ kind: 'tampering', severity: 'high', address: '0xffff888001234560' });
      expect(f!.evidence).toMatch(/direct map/);
    }
    expect(
      judgeHook(hook({ kind: 'lsm', where: 'lsm file_open', role: 'hook', target: heap, lsm: 'apparmor' })),
    ).toMatchObject({
      kind: 'tampering',
      severity: 'critical',
    });
    const hidden = judgeHook(
      hook({
        kind: 'notifier',
        where: 'die_chain',
        role: 'notifier_call',
        target: t(0xffffffffc8000000n, 'module_area', '0xffffffffc8000000'),
      }),
    );
    expect(hidden!.evidence).toMatch(/module space outside every listed module/);
  });

  it('NULL where a callback is required: a warning', () => {
    expect(
      judgeHook(hook({ kind: 'notifier', where: 'die_chain', role: 'notifier_call', target: t(0n, 'null', '0x0') })),
    ).toMatchObject({
      kind: 'warning',
      severity: 'low',
      symbol: null,
    });
  });

  it('ftrace: a module ops on a syscall function is tampering; on other functions or all of them a warning; core ops nothing', () => {
    const sys = judgeHook(
      hook({
        kind: 'ftrace',
        where: 'ftrace_ops_list',
        role: 'func',
        target: mod('rk_hook'),
        filter: filter(['__x64_sys_kill+0x4', 'vfs_read']),
      }),
    );
    expect(sys).toMatchObject({ kind: 'tampering', severity: 'high' });
    expect(sys!.evidence).toMatch(/__x64_sys_kill\+0x4/);
    expect(
      judgeHook(
        hook({
          kind: 'ftrace',
          where: 'ftrace_ops_list',
          role: 'func',
          target: mod('prof'),
          filter: filter(['vfs_read']),
        }),
      ),
    ).toMatchObject({ kind: 'warning', severity: 'medium' });
    expect(
      judgeHook(
        hook({ kind: 'ftrace', where: 'ftrace_ops_list', role: 'func', target: mod('prof'), filter: filter([]) }),
      )!.evidence,
    ).toMatch(/every function/);
    expect(
      judgeHook(
        hook({
          kind: 'ftrace',
          where: 'ftrace_ops_list',
          role: 'func',
          target: core('function_trace_call'),
          filter: filter(['__x64_sys_getdents64']),
        }),
      ),
    ).toBeUndefined();
    // a direct call from a module on a syscall function (ops func in core: call_direct_funcs)
    const direct = judgeHook(
      hook({
        kind: 'ftrace',
        where: 'ftrace_ops_list',
        role: 'func',
        target: core('call_direct_funcs'),
        filter: { ...filter(['__x64_sys_openat']), direct: [{ ip: '__x64_sys_openat', target: mod('my_tramp') }] },
      }),
    );
    expect(direct).toMatchObject({ kind: 'tampering', severity: 'high' });
    // a BPF trampoline (module space, no module) as a direct call is not judged on its own
    expect(
      judgeHook(
        hook({
          kind: 'ftrace',
          where: 'ftrace_ops_list',
          role: 'func',
          target: core('call_direct_funcs'),
          filter: {
            ...filter(['bpf_lsm_file_open']),
            direct: [{ ip: 'bpf_lsm_file_open', target: t(0xffffffffc0400000n, 'module_area', '0xffffffffc0400000') }],
          },
        }),
      ),
    ).toBeUndefined();
  });

  it('kprobes: a module handler on a syscall function is tampering; elsewhere a warning; core handlers nothing', () => {
    const probe = core('__x64_sys_getppid', 0x2000n);
    expect(
      judgeHook(
        hook({ kind: 'kprobe', where: 'kprobe __x64_sys_getppid', role: 'pre_handler', target: mod('rk_pre'), probe }),
      ),
    ).toMatchObject({ kind: 'tampering', severity: 'high' });
    expect(
      judgeHook(
        hook({
          kind: 'kprobe',
          where: 'kprobe tcp4_seq_show',
          role: 'pre_handler',
          target: mod('rk_pre'),
          probe: core('tcp4_seq_show'),
        }),
      ),
    ).toMatchObject({ kind: 'warning', severity: 'medium' });
    expect(
      judgeHook(
        hook({
          kind: 'kprobe',
          where: 'kprobe __x64_sys_getppid',
          role: 'pre_handler',
          target: core('kprobe_dispatcher'),
          probe,
        }),
      ),
    ).toBeUndefined();
    expect(
      judgeHook(
        hook({
          kind: 'kprobe',
          where: 'kprobe x',
          role: 'pre_handler',
          target: core('kprobe_dispatcher'),
          probe: heap,
        }),
      ),
    ).toMatchObject({ kind: 'warning' });
  });

  it('netfilter: module hooks are normal; a hook replaced in place (≠ its nf_hook_ops) is tampering', () => {
    expect(
      judgeHook(
        hook({
          kind: 'netfilter',
          where: 'netfilter ipv4/PRE_ROUTING',
          role: 'hook',
          target: mod('ipv4_conntrack_in'),
        }),
      ),
    ).toBeUndefined();
    expect(
      judgeHook(
        hook({
          kind: 'netfilter',
          where: 'netfilter ipv4/PRE_ROUTING',
          role: 'hook',
          target: mod('evil'),
          expected: { what: 'its nf_hook_ops.hook', target: mod('ipv4_conntrack_in') },
        }),
      ),
    ).toMatchObject({ kind: 'tampering', severity: 'high' });
  });

  it('notifiers: a module on the keyboard chain is a medium warning, on vt a low one, elsewhere nothing', () => {
    expect(
      judgeHook(
        hook({ kind: 'notifier', where: 'keyboard_notifier_list', role: 'notifier_call', target: mod('klog') }),
      ),
    ).toMatchObject({ kind: 'warning', severity: 'medium' });
    expect(
      judgeHook(hook({ kind: 'notifier', where: 'vt_notifier_list', role: 'notifier_call', target: mod('slog') })),
    ).toMatchObject({ kind: 'warning', severity: 'low' });
    expect(
      judgeHook(
        hook({ kind: 'notifier', where: 'netdev_chain', role: 'notifier_call', target: mod('bond_netdev_event') }),
      ),
    ).toBeUndefined();
    expect(
      judgeHook(
        hook({
          kind: 'notifier',
          where: 'keyboard_notifier_list',
          role: 'notifier_call',
          target: core('kbd_led_trigger'),
        }),
      ),
    ).toBeUndefined();
  });

  it('LSM: a hook in a module, a static call to elsewhere, an unused slot with a target, a disabled key: tampering', () => {
    const lsm = (p: Partial<HookRecord>) =>
      judgeHook(
        hook({
          kind: 'lsm',
          where: 'lsm file_open',
          role: 'hook',
          target: core('apparmor_file_open'),
          lsm: 'apparmor',
          ...p,
        }),
      );
    expect(lsm({})).toBeUndefined();
    expect(lsm({ target: mod('rk_file_open') })).toMatchObject({ kind: 'tampering', severity: 'critical' });
    expect(lsm({ expected: { what: 'its static call', target: mod('rk') } })).toMatchObject({
      kind: 'tampering',
      severity: 'critical',
    });
    expect(lsm({ role: 'static_call', target: core('cap_capable') })).toMatchObject({
      kind: 'tampering',
      severity: 'critical',
    });
    expect(lsm({ role: 'static_call', target: t(0n, 'null', '0x0') })).toBeUndefined();
    expect(lsm({ inactive: true })).toMatchObject({ kind: 'tampering', severity: 'high' });
    expect(lsm({ inactive: true, lsm: 'bpf', target: core('bpf_lsm_file_open') })).toBeUndefined();
  });

  it('findings carry the target address and symbol and a stable key', () => {
    const h = hook({
      kind: 'kprobe',
      where: 'kprobe __x64_sys_getppid',
      role: 'pre_handler',
      target: mod('rk_pre'),
      probe: core('__x64_sys_getppid'),
    });
    const f = judgeHook(h)!;
    expect(f).toMatchObject({
      check: 'hooks',
      symbol: 'rk_pre+0x0 [rk]',
      address: '0xffffffffc0100020',
      new: '0xffffffffc0100020',
    });
    expect(f.key).toBe('hooks:kprobe:kprobe __x64_sys_getppid:pre_handler:rk_pre+0x0 [rk]');
    expect(hookKey(h)).toBe('kprobe:kprobe __x64_sys_getppid:pre_handler:rk_pre+0x0 [rk]');
  });
});

describe('baseline: hooksState and diffHooks', () => {
  const nfCore = hook({
    kind: 'netfilter',
    where: 'netfilter ipv4/POST_ROUTING',
    role: 'hook',
    target: core('apparmor_ip_postroute'),
  });
  const lsmHook = hook({
    kind: 'lsm',
    where: 'lsm file_open',
    role: 'hook',
    target: core('apparmor_file_open'),
    lsm: 'apparmor',
  });
  const base = hooksState({ hooks: [nfCore, nfCore, lsmHook], variants: { lsm: 'x' }, modules: ['dummy'] });

  it('state: one entry per key, JSON only', () => {
    expect(base.hooks).toHaveLength(2);
    expect(JSON.parse(JSON.stringify(base))).toEqual(base);
  });

  it('a new legitimate hook is an event; one already judged is not repeated', () => {
    const nfMod = hook({
      kind: 'netfilter',
      where: 'netfilter ipv4/PRE_ROUTING',
      role: 'hook',
      target: mod('ipv4_conntrack_in'),
    });
    const evil = hook({ kind: 'notifier', where: 'die_chain', role: 'notifier_call', target: heap });
    const judged = [judgeHook(evil)!];
    const d = diffHooks([nfCore, lsmHook, nfMod, evil], judged, base);
    expect(d).toHaveLength(1);
    expect(d[0]).toMatchObject({ kind: 'event', severity: 'info', symbol: 'ipv4_conntrack_in+0x0 [rk]' });
    expect(d[0].evidence).toMatch(/new since the baseline.*module rk \(loaded after the baseline\)/);
  });

  it('a hook gone: an event, but an LSM hook gone is tampering; a partial pass reports additions only', () => {
    const d = diffHooks([], [], base);
    expect(d.map((f) => [f.kind, f.severity])).toEqual([
      ['event', 'info'],
      ['tampering', 'high'],
    ]);
    expect(d[1].evidence).toMatch(/LSM hook gone since the baseline.*apparmor_file_open/);
    expect(diffHooks([], [], base, { removals: false })).toEqual([]);
  });
});

// ------------------------------------------------------------------------------ synthetic kernels

const KTEXT = 0xffffffff81000000n;

function buildBtf() {
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  const u32 = b.int('unsigned int', 4);
  const ulong = b.int('long unsigned int', 8);
  const voidp = b.ptr(0);
  const hnode = b.nextId;
  b.struct('hlist_node', 16, [
    { name: 'next', type: hnode + 1, bits: 0 },
    { name: 'pprev', type: hnode + 2, bits: 64 },
  ]);
  b.ptr(hnode);
  b.ptr(hnode + 1);
  const hhead = b.struct('hlist_head', 8, [{ name: 'first', type: hnode + 1, bits: 0 }]);
  const hheadp = b.ptr(hhead);
  const lh = b.nextId;
  b.struct('list_head', 16, [
    { name: 'next', type: lh + 1, bits: 0 },
    { name: 'prev', type: lh + 1, bits: 64 },
  ]);
  b.ptr(lh);
  const nb = b.nextId;
  b.struct('notifier_block', 24, [
    { name: 'notifier_call', type: voidp, bits: 0 },
    { name: 'next', type: nb + 1, bits: 64 },
    { name: 'priority', type: int, bits: 128 },
  ]);
  b.ptr(nb);
  b.struct('atomic_notifier_head', 16, [
    { name: 'lock', type: u32, bits: 0 },
    { name: 'head', type: nb + 1, bits: 64 },
  ]);
  b.struct('kprobe', 64, [
    { name: 'hlist', type: hnode, bits: 0 },
    { name: 'list', type: lh, bits: 128 },
    { name: 'addr', type: voidp, bits: 256 },
    { name: 'pre_handler', type: voidp, bits: 320 },
    { name: 'post_handler', type: voidp, bits: 384 },
    { name: 'flags', type: u32, bits: 448 },
  ]);
  const fh = b.struct('ftrace_hash', 24, [
    { name: 'size_bits', type: ulong, bits: 0 },
    { name: 'buckets', type: hheadp, bits: 64 },
    { name: 'count', type: ulong, bits: 128 },
  ]);
  const fhp = b.ptr(fh);
  const foh = b.struct('ftrace_ops_hash', 16, [
    { name: 'notrace_hash', type: fhp, bits: 0 },
    { name: 'filter_hash', type: fhp, bits: 64 },
  ]);
  const fohp = b.ptr(foh);
  const ops = b.nextId;
  b.struct('ftrace_ops', 32, [
    { name: 'func', type: voidp, bits: 0 },
    { name: 'next', type: ops + 1, bits: 64 },
    { name: 'flags', type: ulong, bits: 128 },
    { name: 'func_hash', type: fohp, bits: 192 },
  ]);
  b.ptr(ops);
  b.struct('ftrace_func_entry', 24, [
    { name: 'hlist', type: hnode, bits: 0 },
    { name: 'ip', type: ulong, bits: 128 },
  ]);
  return parseBtf(b.build());
}

interface Synth {
  m: KernelScratchMemory;
  k: KernelObjects;
  kbd: bigint;
  table: bigint;
  opsList: bigint;
  listEnd: bigint;
}

/** A synthetic kernel: core text symbols, keyboard_notifier_list, kprobe_table[64], ftrace_ops_list. */
function synth(fill: (s: Omit<Synth, 'k'>) => void): Synth {
  const m = new KernelScratchMemory();
  const kbd = m.alloc(16);
  const table = m.alloc(64 * 8, 64);
  const listEnd = m.alloc(32);
  const opsList = m.alloc(8);
  m.u64(opsList, listEnd);
  fill({ m, kbd, table, opsList, listEnd });
  const sb = new SymbolTableBuilder();
  sb.add('_text', 'T', KTEXT);
  sb.add('_stext', 'T', KTEXT);
  sb.add('kbd_core_cb', 't', KTEXT + 0x1000n);
  sb.add('__x64_sys_getppid', 'T', KTEXT + 0x2000n);
  sb.add('kprobe_dispatcher', 't', KTEXT + 0x3000n);
  sb.add('_etext', 'T', KTEXT + 0x100000n);
  sb.add('_end', 'B', KTEXT + 0x200000n);
  sb.add('keyboard_notifier_list', 'b', kbd);
  sb.add('kprobe_table', 'b', table);
  sb.add('kprobes_initialized', 'b', table + 64n * 8n);
  sb.add('ftrace_list_end', 'D', listEnd);
  sb.add('ftrace_ops_list', 'D', opsList);
  const paging = new X86Paging(new CountingMemory(m.pt.memory()), m.pt.dtb, 4);
  const k = new KernelObjects({ paging, btf: buildBtf(), symbols: sb.build() });
  return { m, k, kbd, table, opsList, listEnd };
}

function notifier(m: KernelScratchMemory, call: bigint, next = 0n, prio = 0): bigint {
  const nb = m.alloc(24);
  m.u64(nb, call);
  m.u64(nb + 8n, next);
  m.u32(nb + 16n, prio);
  return nb;
}

function kprobe(m: KernelScratchMemory, bucket: bigint, addr: bigint, pre: bigint): bigint {
  const kp = m.alloc(64);
  m.u64(kp, 0n); // hlist.next
  m.u64(kp + 8n, bucket); // hlist.pprev
  m.u64(bucket, kp);
  m.u64(kp + 16n, kp + 16n); // list: empty
  m.u64(kp + 24n, kp + 16n);
  m.u64(kp + 32n, addr);
  m.u64(kp + 40n, pre);
  return kp;
}

describe('walks over a synthetic kernel', () => {
  it('keyboard notifier chain: core callbacks are fine, a heap callback is tampering', async () => {
    let heapCb = 0n;
    const s = synth(({ m, kbd }) => {
      heapCb = m.alloc(64); // code in the heap
      const second = notifier(m, heapCb);
      m.u64(kbd + 8n, notifier(m, KTEXT + 0x1000n, second, 1));
    });
    const e = await enumerateHooks(s.k, { kinds: ['notifier'] });
    expect(e.partial).toBe(false);
    expect(e.variants.notifier).toBe('keyboard_notifier_list');
    expect(e.hooks.map((h) => [h.where, h.target.symbol, h.target.location, h.detail])).toEqual([
      ['keyboard_notifier_list', 'kbd_core_cb', 'core_text', 'priority 1'],
      ['keyboard_notifier_list', '0x' + heapCb.toString(16).padStart(16, '0'), 'unknown', 'priority 0'],
    ]);
    // no `modules` list in this kernel: said once, and every module address counts as outside text
    expect(e.warnings).toEqual([expect.stringMatching(/^modules list unreadable/)]);
    const out = await hooksCheck.run({ k: s.k } as unknown as CheckContext, undefined);
    expect(out.findings).toHaveLength(1);
    expect(out.findings[0]).toMatchObject({ kind: 'tampering', severity: 'high', address: '0x' + heapCb.toString(16) });
  });

  it('a cyclic notifier chain: the blocks read, a warning, partial — no hang', async () => {
    const s = synth(({ m, kbd }) => {
      const a = notifier(m, KTEXT + 0x1000n);
      const b = notifier(m, KTEXT + 0x1000n, a);
      m.u64(a + 8n, b); // a → b → a
      m.u64(kbd + 8n, a);
    });
    const e = await enumerateHooks(s.k, { kinds: ['notifier'] });
    expect(e.hooks).toHaveLength(2);
    expect(e.partial).toBe(true);
    expect(e.warnings.join('\n')).toMatch(/keyboard_notifier_list: cycle at 0x/);
  });

  it('an unreadable notifier block: warning and partial, the check still returns', async () => {
    const s = synth(({ kbd, m }) => m.u64(kbd + 8n, 0xffff888077770000n));
    const out = await hooksCheck.run({ k: s.k } as unknown as CheckContext, undefined);
    expect(out.partial).toBe(true);
    expect(out.warnings.join('\n')).toMatch(/keyboard_notifier_list/);
    expect(out.findings).toEqual([]);
  });

  it('kprobe_table: a heap handler on __x64_sys_getppid is tampering; a core handler is not; the table size follows the next symbol', async () => {
    let heapPre = 0n;
    const s = synth(({ m, table }) => {
      heapPre = m.alloc(64);
      kprobe(m, table + 8n * 5n, KTEXT + 0x2000n, heapPre);
      kprobe(m, table + 8n * 63n, KTEXT + 0x2000n, KTEXT + 0x3000n);
    });
    expect(kprobeTableSize(s.k, s.table)).toBe(64);
    const e = await enumerateHooks(s.k, { kinds: ['kprobe'] });
    expect(e.variants.kprobe).toBe('kprobe_table[64]');
    expect(e.hooks.map((h) => [h.where, h.role, h.target.symbol])).toEqual([
      ['kprobe __x64_sys_getppid', 'pre_handler', '0x' + heapPre.toString(16).padStart(16, '0')],
      ['kprobe __x64_sys_getppid', 'pre_handler', 'kprobe_dispatcher'],
    ]);
    const out = await hooksCheck.run({ k: s.k } as unknown as CheckContext, undefined);
    expect(out.findings.map((f) => [f.kind, f.severity])).toEqual([['tampering', 'high']]);
  });

  it('a kprobe bucket that loops: warning, partial, bounded', async () => {
    const s = synth(({ m, table }) => {
      const kp = kprobe(m, table, KTEXT + 0x2000n, KTEXT + 0x3000n);
      m.u64(kp, kp); // hlist.next = itself
    });
    const e = await enumerateHooks(s.k, { kinds: ['kprobe'] });
    expect(e.partial).toBe(true);
    expect(e.hooks).toHaveLength(1);
    expect(e.warnings.join('\n')).toMatch(/kprobe_table\[0\].*cycle/);
  });

  it('ftrace_ops_list: the filter hash is read; a NULL link ends the walk with a warning', async () => {
    let ops = 0n;
    const s = synth(({ m, opsList, listEnd }) => {
      const entry = m.alloc(24);
      const buckets = m.alloc(8 * 2);
      m.u64(buckets + 8n, entry);
      m.u64(entry + 8n, buckets + 8n);
      m.u64(entry + 16n, KTEXT + 0x2004n); // __x64_sys_getppid+0x4
      const hash = m.alloc(24);
      m.u64(hash, 1n); // size_bits: 2 buckets
      m.u64(hash + 8n, buckets);
      m.u64(hash + 16n, 1n);
      const fh = m.alloc(16);
      m.u64(fh + 8n, hash);
      ops = m.alloc(32);
      m.u64(ops, 0xffffffffc0400000n); // func: module space, no module
      m.u64(ops + 8n, listEnd);
      m.u64(ops + 24n, fh);
      m.u64(opsList, ops);
    });
    const e = await enumerateHooks(s.k, { kinds: ['ftrace'] });
    expect(e.partial).toBe(false);
    expect(e.hooks).toHaveLength(1);
    expect(e.hooks[0].filter).toEqual({
      count: 1,
      functions: ['__x64_sys_getppid+0x4'],
      syscalls: ['__x64_sys_getppid+0x4'],
      truncated: false,
      direct: [],
    });
    expect(e.hooks[0].target.location).toBe('module_area');
    // the same ops with a NULL next
    s.m.u64(ops + 8n, 0n);
    const bad = await enumerateHooks(s.k, { kinds: ['ftrace'] });
    expect(bad.partial).toBe(true);
    expect(bad.warnings.join('\n')).toMatch(/ftrace_ops_list: NULL link after 1 ops/);
  });

  it('kinds this kernel lacks are absent, not partial', async () => {
    const s = synth(() => {});
    const e = await enumerateHooks(s.k);
    expect(e.variants).toMatchObject({ netfilter: 'absent', lsm: 'absent' });
    expect(e.partial).toBe(false);
    expect(e.hooks).toEqual([]);
  });
});
