/**
 * The hooks check on real guests (every lab kernel):
 * - the clean snapshot: zero tampering and zero warnings; every hook in core kernel text; the LSM
 *   hooks' LSM names are exactly the guest's /sys/kernel/security/lsm; AppArmor's netfilter
 *   POST_ROUTING hooks (ipv4, ipv6) are found in init_net and in the workload's second network
 *   namespace (inode numbers from the truth); the structure each kind is read from is the one the
 *   kernel's history says (LSM static calls from 6.12, security_hook_heads before);
 * - real hooks made in the running guest (a kprobe_events probe on __x64_sys_getppid, the function
 *   tracer filtered to __x64_sys_getdents64), read from its live RAM: the kprobes are those of
 *   /sys/kernel/debug/kprobes/list, the ftrace filters those of enabled_functions, none is
 *   tampering (core handlers), and against the clean snapshot's baseline each is a new-hook event;
 * - a copy of the snapshot with forged hooks (netfilter, kprobe, keyboard and vt notifiers, ftrace
 *   ops, two LSM hooks): the check reports exactly them, and with the clean baseline also the LSM
 *   hooks the forgery replaced (gone).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { discoverKernel, KernelObjects, type DiscoveredKernel } from '@pmi/kernel';
import { openLabVm, type GroundTruth } from '@pmi/lab';
import {
  symbolBaseName,
  enumerateHooks,
  hooksCheck,
  type CheckContext,
  type CheckOutcome,
  type HookEnumeration,
  type HooksState,
} from '../src/index.js';
import { releaseAtLeast } from '../../linux/test/lab-expect.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-hooks-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Opened {
  mem: PhysicalMemory;
  d: DiscoveredKernel;
  k: KernelObjects;
  ctx: CheckContext;
}

async function open(uri: string, hints?: DiscoveredKernel['facts']['hints']): Promise<Opened> {
  const mem = await openSource(uri);
  const d = await discoverKernel(mem, hints ? { hints } : {});
  const k = KernelObjects.from(d);
  return { mem, d, k, ctx: { d, k, mem } };
}

const hex = (v: bigint) => '0x' + v.toString(16).padStart(16, '0');

function summary(o: CheckOutcome): string {
  return o.findings.map((f) => `${f.kind}/${f.severity} ${f.evidence}`).join('\n');
}

describe.each(targets.map((t) => [t.id, t] as const))('hooks check, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let clean: Opened;
  let e: HookEnumeration;
  let base: CheckOutcome;

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    clean = await open('raw:' + target.snapshot_path);
    const t0 = performance.now();
    base = await hooksCheck.run(clean.ctx, undefined);
    const ms = performance.now() - t0;
    e = await enumerateHooks(clean.k);
    const count = (kind: string) => e.hooks.filter((h) => h.kind === kind).length;
    process.stderr.write(
      `[hooks] ${target.id}: check ${ms.toFixed(0)} ms (${Object.entries(e.ms)
        .map(([k, v]) => `${k} ${v.toFixed(0)}`)
        .join(
          ', ',
        )}); ftrace ${count('ftrace')}, kprobe ${count('kprobe')}, netfilter ${count('netfilter')}, notifier ${count('notifier')}, lsm ${count('lsm')}; state ${JSON.stringify(base.state).length} bytes\n` +
        `[hooks] ${target.id}: variants ${JSON.stringify(e.variants)}\n`,
    );
  });
  afterAll(async () => {
    await clean?.mem.close();
  });

  it('clean snapshot: no finding, no warning; every hook in core kernel text; structures as the kernel has them', async () => {
    expect(base.findings, summary(base)).toEqual([]);
    expect(base.warnings).toEqual([]);
    expect(base.partial).toBe(false);
    expect(e.partial).toBe(false);
    expect(
      e.hooks.filter((h) => h.target.location !== 'core_text').map((h) => `${h.kind} ${h.where} ${h.target.symbol}`),
    ).toEqual([]);
    // the guest boots without tracers or probes
    expect(e.hooks.filter((h) => h.kind === 'ftrace' || h.kind === 'kprobe')).toEqual([]);
    expect(e.variants.ftrace).toBe('ftrace_ops_list');
    expect(e.variants.kprobe).toBe('kprobe_table[64]');
    expect(e.variants.lsm).toMatch(
      releaseAtLeast(target.release, 6, 12) ? /^static_calls_table / : /^security_hook_heads /,
    );
    for (const chain of [
      'keyboard_notifier_list',
      'vt_notifier_list',
      'module_notify_list',
      'panic_notifier_list',
      'die_chain',
      'reboot_notifier_list',
      'netdev_chain',
    ])
      expect(e.variants.notifier.split(',')).toContain(chain);
    // well-known members of the chains
    const on = (chain: string) =>
      e.hooks.filter((h) => h.kind === 'notifier' && h.where === chain).map((h) => symbolBaseName(h.target.symbol));
    expect(on('netdev_chain')).toContain('rtnetlink_event');
    expect(on('panic_notifier_list')).toContain('rcu_panic');
    expect(on('die_chain')).toContain('kprobe_exceptions_notify');
    expect(on('module_notify_list')).toContain('jump_label_module_notify');
    const state = base.state as HooksState;
    expect(state.modules.sort()).toEqual(truth.modules.map((m) => m.name).sort());
    expect(JSON.parse(JSON.stringify(state))).toEqual(state);
  });

  it("LSM hooks: the LSMs found are the guest's /sys/kernel/security/lsm; netfilter: AppArmor's hooks in both network namespaces", async () => {
    const out = await openLabVm(target.name).run(
      'grep -q " /sys/kernel/security " /proc/mounts || mount -t securityfs none /sys/kernel/security; cat /sys/kernel/security/lsm',
    );
    const guest = out.stdout.trim().split(',').sort();
    const lsms = [...new Set(e.hooks.filter((h) => h.kind === 'lsm').map((h) => h.lsm))].sort();
    process.stderr.write(
      `[hooks] ${target.id}: LSMs ${guest.join(',')}; ${e.hooks.filter((h) => h.kind === 'lsm').length} LSM hooks\n`,
    );
    expect(lsms).toEqual(guest);
    // AppArmor registers an ipv4 and an ipv6 POST_ROUTING hook in every network namespace
    const nf = e.hooks.filter((h) => h.kind === 'netfilter');
    expect(nf.map((h) => h.where).sort()).toEqual(['netfilter ipv4/POST_ROUTING', 'netfilter ipv6/POST_ROUTING']);
    const nss = [truth.netns!, ...truth.other_netns.map((n) => n.inum)].sort();
    expect(nss.length).toBeGreaterThanOrEqual(2);
    for (const h of nf) {
      expect(h.target.symbol).toMatch(/^apparmor_ip(v[46])?_postroute$/);
      expect(h.detail).toBe('prio -225');
      expect([...h.netns!].sort()).toEqual(nss);
    }
  });

  it('real hooks in the running guest (kprobe_events, function tracer): listed as the guest lists them, no tampering, events against the baseline', async () => {
    const vm = openLabVm(target.name);
    const T = '/sys/kernel/debug/tracing';
    const setup = [
      'grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs none /sys/kernel/debug',
      `echo 'p:pmihooks __x64_sys_getppid' > ${T}/kprobe_events`,
      `echo 1 > ${T}/events/kprobes/pmihooks/enable`,
      `echo __x64_sys_getdents64 > ${T}/set_ftrace_filter`,
      `echo function > ${T}/current_tracer`,
      'echo @@kprobes',
      'cat /sys/kernel/debug/kprobes/list',
      'echo @@enabled',
      `cat ${T}/enabled_functions`,
    ].join('\n');
    const undo = [
      `echo nop > ${T}/current_tracer`,
      `echo > ${T}/set_ftrace_filter`,
      `echo 0 > ${T}/events/kprobes/pmihooks/enable`,
      `echo > ${T}/kprobe_events`,
      `cat ${T}/enabled_functions | wc -l`,
      'cat /sys/kernel/debug/kprobes/list | wc -l',
    ].join('\n');
    let live: Opened | undefined;
    try {
      const r = await vm.run(setup);
      expect(r.stderr).toBe('');
      const [kpText, enText] = r.stdout.split('@@enabled');
      const guestProbes = kpText
        .split('\n')
        .map((l) => /^([0-9a-f]{16})\s+([kr])\s+(\S+)/.exec(l.trim()))
        .filter((m) => m !== null)
        .map((m) => BigInt('0x' + m[1]));
      const guestFns = enText
        .split('\n')
        .map((l) => /^(\S+) \(\d+\)/.exec(l.trim())?.[1])
        .filter((x) => x !== undefined)
        .sort();
      expect(guestProbes).toHaveLength(1);
      process.stderr.write(
        `[hooks] ${target.id}: guest kprobes ${kpText.trim().split('\n').slice(1).join(' | ')}; enabled ${guestFns.join(', ')}\n`,
      );

      live = await open(target.source_uri, clean.d.facts.hints);
      const t0 = performance.now();
      const le = await enumerateHooks(live.k);
      process.stderr.write(`[hooks] ${target.id}: live read ${(performance.now() - t0).toFixed(0)} ms\n`);
      expect(le.warnings).toEqual([]);
      const kp = le.hooks.filter((h) => h.kind === 'kprobe');
      expect(kp.map((h) => [h.probe!.va, h.role, h.target.symbol])).toEqual([
        [guestProbes[0], 'pre_handler', 'kprobe_dispatcher'],
      ]);
      const ft = le.hooks.filter((h) => h.kind === 'ftrace');
      expect(ft.map((h) => symbolBaseName(h.target.symbol)).sort()).toEqual([
        'function_trace_call',
        'kprobe_ftrace_handler',
      ]);
      expect(ft.flatMap((h) => h.filter!.functions.map(symbolBaseName)).sort()).toEqual(guestFns);
      for (const h of ft)
        expect(h.filter!.syscalls.map(symbolBaseName)).toEqual(h.filter!.functions.map(symbolBaseName));

      const o = await hooksCheck.run(live.ctx, base.state);
      const events = o.findings.filter((f) => f.kind === 'event');
      expect(
        o.findings.filter((f) => f.kind !== 'event'),
        summary(o),
      ).toEqual([]);
      expect(events.map((f) => f.symbol && symbolBaseName(f.symbol)).sort()).toEqual([
        'function_trace_call',
        'kprobe_dispatcher',
        'kprobe_ftrace_handler',
      ]);
      for (const f of events)
        expect(f.evidence).toMatch(/^new since the baseline: (ftrace ftrace_ops_list|kprobe __(do|x64)_sys_getppid)/);
    } finally {
      await live?.mem.close();
      const u = await vm.run(undo);
      expect(u.stdout.trim().split(/\s+/)).toEqual(['0', '0']);
    }
  });

  it('a copy with forged hooks: exactly those are reported; with the clean baseline also the LSM hooks they replaced', async () => {
    const { k } = clean;
    const sym = (n: string) => k.symbol(n);
    const off = (type: string, field: string) => BigInt(k.btf.fieldOffset(type, field));
    const writes = new Map<bigint, bigint>();
    const w = (va: bigint, v: bigint) => writes.set(va, v);
    const S = sym('empty_zero_page'); // 4 KiB of zeros: room for the fake objects
    for (let i = 0n; i < 4096n; i += 8n) w(S + i, 0n);
    const pob = BigInt(await k.globalValue('page_offset_base'));
    const heap = (n: bigint) => pob + 0x1000000n + n * 0x40n; // direct-map (heap) addresses
    const dummyFns = truth.kallsyms
      .filter((s) => s.module === 'dummy' && s.type.toLowerCase() === 't')
      .map((s) => BigInt(s.address));
    expect(dummyFns.length).toBeGreaterThanOrEqual(3);
    const [modFn1, modFn2, modFn3] = dummyFns;
    const getppid = sym('__x64_sys_getppid');
    const getdents = sym('__x64_sys_getdents64');

    // 1. netfilter: init_net.nf.hooks_ipv4[NF_INET_LOCAL_IN] → one entry calling the heap (and its nf_hook_ops says the same)
    const ents = S;
    const ops = S + 0x80n;
    w(ents, 1n); // num_hook_entries
    w(ents + off('nf_hook_entries', 'hooks') + off('nf_hook_entry', 'hook'), heap(1n));
    w(ents + off('nf_hook_entries', 'hooks') + 16n, ops); // orig_ops[0]
    w(ops + off('nf_hook_ops', 'hook'), heap(1n));
    w(sym('init_net') + off('net', 'nf') + off('netns_nf', 'hooks_ipv4') + 8n, ents);
    // 2. kprobe on __x64_sys_getppid, pre_handler in the dummy module, first in bucket 0
    const kp = S + 0x100n;
    const bucket = sym('kprobe_table');
    w(kp, await k.readPointer(bucket));
    w(kp + 8n, bucket);
    w(kp + off('kprobe', 'list'), kp + off('kprobe', 'list'));
    w(kp + off('kprobe', 'list') + 8n, kp + off('kprobe', 'list'));
    w(kp + off('kprobe', 'addr'), getppid);
    w(kp + off('kprobe', 'pre_handler'), modFn1);
    w(bucket, kp);
    // 3. keyboard notifier: a heap callback, then one in the dummy module (a warning); vt: module space without a module
    const nbA = S + 0x200n;
    const nbB = S + 0x240n;
    const nbC = S + 0x280n;
    w(nbA, heap(2n));
    w(nbA + 8n, nbB);
    w(nbB, modFn2);
    const head = (chain: string) => sym(chain) + off('atomic_notifier_head', 'head');
    w(head('keyboard_notifier_list'), nbA);
    const modEnd = truth.modules.map((m) => BigInt(m.address) + BigInt(m.size)).reduce((a, b) => (a > b ? a : b));
    const hidden = ((modEnd + 0x1000000n) >> 12n) << 12n;
    w(nbC, hidden);
    w(head('vt_notifier_list'), nbC);
    // 4. ftrace ops in the dummy module filtering on __x64_sys_getdents64
    const fops = S + 0x300n;
    const fhash = S + 0x400n;
    const hash = S + 0x440n;
    const buckets = S + 0x480n;
    const entry = S + 0x4c0n;
    w(fops + off('ftrace_ops', 'func'), modFn3);
    w(fops + off('ftrace_ops', 'next'), sym('ftrace_list_end'));
    w(fops + off('ftrace_ops', 'func_hash'), fhash);
    w(fhash + off('ftrace_ops_hash', 'filter_hash'), hash);
    w(hash + off('ftrace_hash', 'buckets'), buckets);
    w(hash + off('ftrace_hash', 'count'), 1n);
    w(buckets, entry);
    w(entry + 8n, buckets);
    w(entry + off('ftrace_func_entry', 'ip'), getdents);
    w(sym('ftrace_ops_list'), fops);
    // 5. LSM: file_open's first hook → the heap; task_kill's first → its static call (or hook) into the dummy module
    const lsmFirst = async (hook: string): Promise<{ hl: bigint; key?: bigint }> => {
      if (e.variants.lsm.startsWith('static_calls_table')) {
        const t = sym('static_calls_table') + off('lsm_static_calls_table', hook);
        return {
          hl: await k.readPointer(t + off('lsm_static_call', 'hl')),
          key: await k.readPointer(t + off('lsm_static_call', 'key')),
        };
      }
      const first = await k.readPointer(sym('security_hook_heads') + off('security_hook_heads', hook));
      return { hl: first - off('security_hook_list', 'list') };
    };
    const fo = await lsmFirst('file_open');
    w(fo.hl + off('security_hook_list', 'hook'), heap(3n));
    const tk = await lsmFirst('task_kill');
    if (tk.key !== undefined) w(tk.key + off('static_call_key', 'func'), modFn1);
    else w(tk.hl + off('security_hook_list', 'hook'), modFn1);

    const copy = join(scratch, `${target.name}-hooks.raw`);
    execFileSync('cp', ['--sparse=always', target.snapshot_path, copy]);
    const fd = openSync(copy, 'r+');
    try {
      for (const [va, v] of writes) {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(BigInt.asUintN(64, v));
        writeSync(fd, b, 0, 8, await k.paging.translate(va));
      }
    } finally {
      closeSync(fd);
    }
    let bad: Opened | undefined;
    try {
      bad = await open('raw:' + copy, clean.d.facts.hints);
      const t0 = performance.now();
      const o = await hooksCheck.run(bad.ctx, undefined);
      process.stderr.write(
        `[hooks] ${target.id}: forged copy checked in ${(performance.now() - t0).toFixed(0)} ms:\n${summary(o)}\n`,
      );
      expect(o.warnings).toEqual([]);
      expect(o.partial).toBe(false);
      const got = o.findings.map((f) => `${f.kind} ${f.severity} ${f.address}`).sort();
      const want = [
        `tampering high ${hex(heap(1n))}`, // netfilter
        `tampering high ${hex(modFn1)}`, // kprobe
        `tampering high ${hex(heap(2n))}`, // keyboard notifier
        `warning medium ${hex(modFn2)}`, // keyboard notifier in a module
        `tampering high ${hex(hidden)}`, // vt notifier, module space
        `tampering high ${hex(modFn3)}`, // ftrace
        `tampering critical ${hex(heap(3n))}`, // LSM file_open
        tk.key !== undefined
          ? `tampering critical ${hex(await bad.k.readPointer(tk.hl + off('security_hook_list', 'hook')))}`
          : `tampering critical ${hex(modFn1)}`,
      ].sort();
      expect(got).toEqual(want);
      const by = (re: RegExp) => o.findings.filter((f) => re.test(f.evidence));
      expect(by(/^netfilter ipv4\/LOCAL_IN .*the direct map/)).toHaveLength(1);
      expect(by(/^kprobe __(x64|do)_sys_getppid .*module text of dummy.*system-call function/)).toHaveLength(1);
      expect(by(/^notifier keyboard_notifier_list .*the direct map/)).toHaveLength(1);
      expect(by(/^notifier keyboard_notifier_list .*module text of dummy.*keystroke/)).toHaveLength(1);
      expect(by(/^notifier vt_notifier_list .*module space outside every listed module/)).toHaveLength(1);
      expect(
        by(/^ftrace ftrace_ops_list .*module text of dummy.* filters on system-call function __x64_sys_getdents64/),
      ).toHaveLength(1);
      expect(by(/^lsm file_open /)).toHaveLength(1);
      expect(by(/^lsm task_kill /)).toHaveLength(1);
      if (tk.key !== undefined)
        expect(by(/^lsm task_kill .*its static call calls .*module text of dummy/)).toHaveLength(1);

      // with the clean baseline: the same, plus the LSM hooks the forgery replaced, gone
      const ob = await hooksCheck.run(bad.ctx, base.state);
      const extra = ob.findings.filter((f) => !o.findings.some((g) => g.key === f.key));
      expect(extra.map((f) => f.kind)).toEqual(extra.map(() => 'tampering'));
      expect(extra.map((f) => f.evidence).sort()).toEqual(
        [`file_open`, ...(tk.key === undefined ? ['task_kill'] : [])].map((h) =>
          expect.stringMatching(new RegExp(`^LSM hook gone since the baseline: lsm ${h} hook → `)),
        ),
      );
    } finally {
      await bad?.mem.close();
      rmSync(copy, { force: true });
    }
  });
});
