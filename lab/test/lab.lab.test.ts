import { readFileSync, statSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { isPmiError } from '@pmi/core';
import {
  labSourceUri,
  listLabVms,
  openLabVm,
  resolveKernel,
  WORKLOAD,
  type GroundTruth,
  type ThreadEntry,
  type ThreadListing,
  type VcpuListing,
} from '@pmi/lab';
import { EXPECTED_RELEASE, type LabTarget } from './targets.js';

const targets = inject('labTargets');
const KERNEL_HALF = 0xffff800000000000n;

function recorded(t: LabTarget): GroundTruth {
  return JSON.parse(readFileSync(t.truth_path, 'utf8')) as GroundTruth;
}

/** Lowest kernel-half address: 4-level 0xffff800000000000, 5-level (57-bit) 0xff00000000000000. */
const kernelHalf = (paging: 4 | 5): bigint => (paging === 5 ? 0xff00000000000000n : KERNEL_HALF);
const HEX = /^0x(0|[1-9a-f][0-9a-f]*)$/;

/** The pmi-threads process's rows of a thread listing: exactly its main thread and the three named workers. */
function expectThreadWorkload(threads: readonly ThreadEntry[]): ThreadEntry[] {
  const main = threads.filter((x) => x.comm === WORKLOAD.threads.comm);
  expect(main, 'one pmi-threads main thread').toHaveLength(1);
  expect(main[0].tid).toBe(main[0].pid);
  const mine = threads.filter((x) => x.pid === main[0].pid);
  expect(mine).toHaveLength(1 + WORKLOAD.threads.threadNames.length);
  expect(new Set(mine.map((x) => x.tid)).size).toBe(mine.length);
  const workers = mine.filter((x) => x.tid !== x.pid);
  expect(workers.map((x) => x.comm).sort()).toEqual([...WORKLOAD.threads.threadNames]);
  // no other process has threads of that name
  expect(threads.filter((x) => x.comm.startsWith('pmi-worker-') && x.pid !== main[0].pid)).toEqual([]);
  return mine;
}

function sym(truth: GroundTruth, name: string): bigint {
  const s = truth.kallsyms.find((k) => k.name === name && k.module === undefined);
  expect(s, `kallsyms has ${name}`).toBeDefined();
  return BigInt(s!.address);
}

describe.each(targets.map((t) => [t.id, t] as const))('lab target %s', (_id, target) => {
  it('is listed as a running lab VM with a qemu source URI', () => {
    const st = listLabVms().find((v) => v.name === target.name);
    expect(st).toBeDefined();
    expect(st!.status).toBe('ready');
    expect(st!.paging).toBe(target.cpu_la57 ? 5 : 4);
    expect(st!.machine).toBe('pc');
    expect(labSourceUri(st!)).toBe(`qemu:${st!.ram_path}?machine=pc`);
    expect(target.source_uri).toBe(labSourceUri(st!));
    expect(statSync(st!.ram_path).size).toBe(st!.memory_bytes);
  });

  it('recorded complete ground truth: release, cmdline, memory, dmesg, iomem', () => {
    const t = recorded(target);
    expect(t.uname_r).toBe(target.expected_release);
    if (!target.substituted) expect(t.uname_r).toBe(EXPECTED_RELEASE[target.kernel]);
    expect(target.release).toBe(t.uname_r);
    expect(t.version).toContain(t.uname_r);
    expect(t.cmdline).toContain('console=ttyS0');
    expect(t.cmdline).toContain('panic=0');
    expect(t.cmdline).toContain('no_timer_check');
    expect(t.cmdline).not.toContain('nokaslr');
    expect(t.mem_total_bytes).toBeGreaterThan(target.memory_bytes / 2);
    expect(t.mem_total_bytes).toBeLessThanOrEqual(target.memory_bytes);
    expect(t.dmesg_tail.length).toBeGreaterThan(5);
    expect(t.iomem.some((r) => r.name === 'System RAM')).toBe(true);
    expect(t.iomem.some((r) => r.name === 'Kernel code' && BigInt(r.start) > 0n)).toBe(true);
    expect(t.la57).toBe(target.paging === 5);
    if (target.cpu_la57 && !t.la57) {
      // An LA57 CPU with a 4-level kernel: only right when the booted kernel was built without 5-level support.
      const st = listLabVms().find((v) => v.name === target.name)!;
      const config = readFileSync(st.vmlinuz.replace(/vmlinuz-/, 'config-'), 'utf8');
      expect(config).toContain('# CONFIG_X86_5LEVEL is not set');
    }
    if (!target.cpu_la57) expect(t.la57).toBe(false);
  });

  it('ps has the workload: names, args, the non-root uid, kernel threads', () => {
    const t = recorded(target);
    const byComm = (c: string) => t.ps.filter((p) => p.comm === c);
    const sleeper = byComm(WORKLOAD.sleeper.comm);
    expect(sleeper).toHaveLength(1);
    expect(sleeper[0].args).toContain(WORKLOAD.sleeper.args);
    expect(sleeper[0].uid).toBe(0);
    const user = byComm(WORKLOAD.userSleeper.comm);
    expect(user).toHaveLength(1);
    expect(user[0].args).toContain(WORKLOAD.userSleeper.args);
    expect(user[0].uid).toBe(1000);
    expect(user[0].gid).toBe(1000);
    const holder = byComm(WORKLOAD.holder.comm);
    expect(holder).toHaveLength(1);
    expect(holder[0].args).toContain(WORKLOAD.holder.file);
    expect(byComm('httpd')).toHaveLength(2);
    const init = t.ps.find((p) => p.pid === 1)!;
    expect(init.args).toBe('/bin/sh /init');
    const kthreadd = t.ps.find((p) => p.pid === 2)!;
    expect(kthreadd.comm).toBe('kthreadd');
    expect(kthreadd.args).toBe('');
    expect(t.ps.filter((p) => p.kernel_thread).length).toBeGreaterThan(10);
    // the collector's own processes are not part of the truth
    expect(t.ps.some((p) => p.pid === t.collector_pid)).toBe(false);
  });

  it('threads: pmi-threads has exactly its four named threads, before (truth) and after the snapshot', async () => {
    const t = recorded(target);
    const before = expectThreadWorkload(t.threads);
    const p = t.ps.find((x) => x.pid === before[0].pid);
    expect(p).toMatchObject({ comm: WORKLOAD.threads.comm, args: '/pmi/bin/pmi-threads', kernel_thread: false });
    // every lasting process of ps has its leader row with the same comm (ps was listed just before the
    // threads: a kworker may have renamed itself and a pmi-sleeper's `sleep 7` ended in between)
    for (const q of t.ps.filter((x) => !x.comm.startsWith('kworker/') && x.comm !== 'sleep')) {
      expect(t.threads.find((x) => x.pid === q.pid && x.tid === q.pid)?.comm, `pid ${q.pid}`).toBe(q.comm);
    }
    expect(t.threads.find((x) => x.tid === 2)).toEqual({ pid: 2, tid: 2, comm: 'kthreadd' });
    expect(t.threads.some((x) => x.comm.startsWith('kworker/'))).toBe(true);
    expect(t.threads.some((x) => x.pid === t.collector_pid)).toBe(false);
    // the listing right after the snapshot: the same process, the same threads
    const after = JSON.parse(readFileSync(target.threads_after_path, 'utf8')) as ThreadListing;
    expect(Date.parse(after.collected_at)).toBeGreaterThan(Date.parse(t.collected_at));
    expect(expectThreadWorkload(after.threads)).toEqual(before);
    // and the guest's task directory right now lists exactly those threads
    const r = await openLabVm(target.name).run(`ls /proc/${before[0].pid}/task | sort -n`);
    expect(r.stdout.trim().split('\n').map(Number)).toEqual(before.map((x) => x.tid).sort((a, b) => a - b));
  });

  it('vcpus.json: QEMU registers of the snapshot pause, one row per vCPU, per-CPU bases as the guest laid them out', async () => {
    const v = JSON.parse(readFileSync(target.vcpus_path, 'utf8')) as VcpuListing;
    expect(target.vcpus_path).toBe(`${target.snapshot_path}.vcpus.json`);
    const t = recorded(target);
    const after = JSON.parse(readFileSync(target.threads_after_path, 'utf8')) as ThreadListing;
    expect(Date.parse(v.collected_at)).toBeGreaterThan(Date.parse(t.collected_at));
    expect(Date.parse(v.collected_at)).toBeLessThanOrEqual(Date.parse(after.collected_at));
    expect(v.vcpus.map((c) => c.cpu)).toEqual([...Array(target.smp).keys()]);
    const half = kernelHalf(target.paging);
    const bases: bigint[] = [];
    for (const c of v.vcpus) {
      expect(Object.keys(c).sort()).toEqual(['cpl', 'cpu', 'gs_base', 'halted', 'kernel_gs_base', 'rip', 'rsp']);
      for (const a of [c.gs_base, c.kernel_gs_base, c.rip, c.rsp]) expect(a).toMatch(HEX);
      expect(typeof c.halted).toBe('boolean');
      expect([0, 3]).toContain(c.cpl);
      // cpl 0: GS is the per-CPU base and RIP is kernel code; cpl 3: the kernel's GS base waits in KernelGSbase
      const base = BigInt(c.cpl === 0 ? c.gs_base : c.kernel_gs_base);
      expect(base, `CPU ${c.cpu} per-CPU base`).toBeGreaterThanOrEqual(half);
      if (c.cpl === 0) expect(BigInt(c.rip)).toBeGreaterThanOrEqual(half);
      else expect(BigInt(c.rip)).toBeLessThan(0x0000800000000000n);
      if (c.halted) expect(c.cpl).toBe(0);
      bases.push(base);
    }
    expect(new Set(bases).size).toBe(bases.length);
    // The guest's own account of its per-CPU layout (mm/percpu.c at boot): unit size and the cpu → unit
    // map of each group. With one group, CPU n's base is the first unit's plus unit(n) × unit size.
    const r = await openLabVm(target.name).run('dmesg | grep "pcpu-alloc: "');
    const lines = r.stdout.split('\n').filter((l) => l.includes('pcpu-alloc: '));
    const unitMatch = / u(\d+) alloc=/.exec(lines.join('\n'));
    expect(unitMatch, r.stdout).not.toBeNull();
    const unitSize = BigInt(unitMatch![1]);
    // "pcpu-alloc: [0] 0 1": the units in order, a group number before each group's first unit
    const words = lines
      .filter((l) => !l.includes(' alloc='))
      .flatMap((l) =>
        l
          .slice(l.indexOf('pcpu-alloc: ') + 12)
          .trim()
          .split(/\s+/),
      );
    expect(
      words.filter((w) => /^\[\d+\]$/.test(w)),
      r.stdout,
    ).toHaveLength(1);
    const units = words.filter((w) => !/^\[\d+\]$/.test(w));
    for (const c of v.vcpus) {
      const unit = units.indexOf(String(c.cpu));
      expect(unit, `CPU ${c.cpu} in ${units.join(' ')}`).toBeGreaterThanOrEqual(0);
      expect(bases[c.cpu] - bases[0], `CPU ${c.cpu}`).toBe(BigInt(unit - units.indexOf('0')) * unitSize);
    }
  });

  it('btf_vmlinux_sha256: the hash of /sys/kernel/btf/vmlinux', async () => {
    const t = recorded(target);
    expect(t.btf_vmlinux_sha256).toMatch(/^[0-9a-f]{64}$/);
    const r = await openLabVm(target.name).run('wc -c < /sys/kernel/btf/vmlinux; sha256sum < /sys/kernel/btf/vmlinux');
    const [size, sum] = r.stdout.trim().split('\n');
    expect(Number(size)).toBeGreaterThan(1 << 20);
    expect(sum.split(/\s+/)[0]).toBe(t.btf_vmlinux_sha256);
  });

  it('the holder process really holds the marker file open', async () => {
    const vm = openLabVm(target.name);
    const t = recorded(target);
    const holder = t.ps.find((p) => p.comm === WORKLOAD.holder.comm)!;
    const r = await vm.run(`readlink /proc/${holder.pid}/fd/3`);
    expect(r.stdout.trim()).toBe(WORKLOAD.holder.file);
  });

  it('sockets: the unix helper in init_net, its twin in a network namespace of its own (readlink ns/net)', async () => {
    const t = recorded(target);
    const [helper] = t.ps.filter((p) => p.comm === WORKLOAD.unix.comm);
    const [inNetns] = t.ps.filter((p) => p.comm === WORKLOAD.unix.netnsComm);
    expect(helper && inNetns).toBeTruthy();
    const vm = openLabVm(target.name);
    // busybox readlink takes one file
    const r = await vm.run(`for f in self ${helper.pid} ${inNetns.pid}; do readlink /proc/$f/ns/net; done`);
    const links = r.stdout.trim().split('\n');
    expect(links.slice(0, 2)).toEqual([`net:[${t.netns}]`, `net:[${t.netns}]`]);
    const other = t.other_netns.find((n) => n.pid === inNetns.pid);
    expect(links[2]).toBe(`net:[${other?.inum}]`);
    expect(other!.inum).not.toBe(t.netns);
    const listens = (es: typeof t.net_unix, path: string) =>
      es.some((e) => e.path === path && e.state === 'LISTEN' && e.socket_type === 'stream');
    expect(listens(t.net_unix, WORKLOAD.unix.streamPath)).toBe(true);
    expect(listens(other!.net_unix, WORKLOAD.unix.netnsStreamName)).toBe(true);
    expect(listens(t.net_unix, WORKLOAD.unix.netnsStreamName)).toBe(false);
    // its TCP listener and one connection to it over the namespace's own lo
    const port = WORKLOAD.unix.netnsTcpPort;
    expect(other!.net_tcp.map((e) => e.state).sort()).toEqual(['ESTABLISHED', 'ESTABLISHED', 'LISTEN']);
    expect(other!.net_tcp.every((e) => e.local_port === port || e.rem_port === port)).toBe(true);
    expect(t.net_tcp.some((e) => e.local_port === WORKLOAD.unix.netnsTcpPort)).toBe(false);
    // UDP: unconnected v4 and v6 and a connected v4 socket in init_net, one v4 socket in the namespace
    const udp = (es: typeof t.net_udp) => es.map((e) => [e.local_ip, e.rem_ip, e.rem_port, e.state]).sort();
    expect(t.net_udp.find((e) => e.rem_port === 0)?.local_port).toBe(WORKLOAD.unix.udpPort);
    expect(udp(t.net_udp)).toEqual([
      ['0.0.0.0', '0.0.0.0', 0, 'CLOSE'],
      ['127.0.0.1', '127.0.0.1', WORKLOAD.unix.udpPort, 'ESTABLISHED'],
    ]);
    expect(t.net_udp6.map((e) => [e.local_ip, e.local_port, e.state])).toEqual([
      ['::', WORKLOAD.unix.udp6Port, 'CLOSE'],
    ]);
    expect(other!.net_udp.map((e) => [e.local_ip, e.local_port, e.state])).toEqual([
      ['0.0.0.0', WORKLOAD.unix.netnsUdpPort, 'CLOSE'],
    ]);
    for (const e of [...t.net_udp, ...t.net_udp6, ...other!.net_udp]) expect(e.inode).toBeGreaterThan(0);
    // 6.2+: the namespace has a UDP hash table of its own (udp_child_hash_entries; shared shows as -N)
    const h = await vm.run(`nsenter -n -t ${inNetns.pid} cat /proc/sys/net/ipv4/udp_hash_entries 2>/dev/null; true`);
    const [major, minor] = t.uname_r.split('.').map(Number);
    expect(h.stdout.trim()).toBe(major > 6 || (major === 6 && minor >= 2) ? '128' : '');
  });

  it('modules: the workload modules are live at kernel-half addresses, with their symbols', () => {
    const t = recorded(target);
    for (const name of resolveKernel(target.kernel).workloadModules) {
      const m = t.modules.find((x) => x.name === name);
      expect(m, name).toBeDefined();
      expect(m!.state).toBe('Live');
      expect(m!.size).toBeGreaterThan(0);
      expect(BigInt(m!.address)).toBeGreaterThanOrEqual(KERNEL_HALF);
      expect(t.kallsyms.some((k) => k.module === name)).toBe(true);
    }
    expect(t.kallsyms.find((k) => k.name === '__this_module' && k.module === 'dummy')).toBeDefined();
  });

  it('kallsyms is whole, with kernel-half KASLR addresses', () => {
    const t = recorded(target);
    expect(t.kallsyms.length).toBeGreaterThan(50_000);
    const text = sym(t, '_text');
    const initTask = sym(t, 'init_task');
    for (const a of [text, initTask, sym(t, 'startup_64'), sym(t, 'linux_banner'), sym(t, 'sys_call_table')]) {
      expect(a).toBeGreaterThanOrEqual(KERNEL_HALF);
    }
    expect(initTask).toBeGreaterThan(text);
    for (const n of ['page_offset_base', 'vmalloc_base', 'vmemmap_base', 'init_top_pgt', 'idt_table', 'prb']) sym(t, n);
    for (const k of t.kallsyms) expect(k.address).toMatch(/^0x[0-9a-f]+$/);
  });

  it('net: IPv4 listener on 8081 in tcp, IPv6 listener on 8080 in tcp6', () => {
    const t = recorded(target);
    const v4 = t.net_tcp.find((r) => r.local_port === WORKLOAD.tcpPort);
    expect(v4?.state).toBe('LISTEN');
    expect(v4?.local_ip).toBe('0.0.0.0');
    expect(v4?.inode).toBeGreaterThan(0);
    const v6 = t.net_tcp6.find((r) => r.local_port === WORKLOAD.tcp6Port);
    expect(v6?.state).toBe('LISTEN');
    expect(v6?.local_ip).toBe('::');
    expect(v6?.raw).toContain(':1F90');
  });

  it('run returns stdout and the exit status', async () => {
    const vm = openLabVm(target.name);
    const r = await vm.run('echo hi; exit 3');
    expect(r.stdout).toBe('hi\n');
    expect(r.exitCode).toBe(3);
    const e = await vm.run('echo oops >&2; false');
    expect(e.stderr).toBe('oops\n');
    expect(e.exitCode).toBe(1);
  });

  it('a marker written to /dev/kmsg shows up in dmesg and the fresh truth', async () => {
    const vm = openLabVm(target.name);
    const marker = `pmi-kmsg-marker-${Date.now().toString(36)}`;
    await vm.run(`echo ${marker} > /dev/kmsg`);
    const r = await vm.run(`dmesg | grep ${marker}`);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(marker);
    const fresh = await vm.groundTruth();
    expect(fresh.dmesg_tail.some((l) => l.includes(marker))).toBe(true);
    // stable facts agree with the recorded truth
    const rec = recorded(target);
    expect(fresh.uname_r).toBe(rec.uname_r);
    expect(fresh.modules.map((m) => [m.name, m.address])).toEqual(rec.modules.map((m) => [m.name, m.address]));
    expect(sym(fresh, 'init_task')).toBe(sym(rec, 'init_task'));
  });

  it('a process started with run appears in the fresh truth', async () => {
    const vm = openLabVm(target.name);
    await vm.run('sleep 313 >/dev/null 2>&1 &');
    const t = await vm.groundTruth({ kallsyms: false });
    expect(t.kallsyms).toEqual([]);
    const p = t.ps.find((x) => x.comm === 'sleep' && x.args === 'sleep 313');
    expect(p).toBeDefined();
    await vm.run(`kill ${p!.pid}`);
    const after = await vm.run(`[ -e /proc/${p!.pid} ] && cat /proc/${p!.pid}/stat`);
    expect(after.stdout).not.toMatch(/\(sleep\) [RSD]/);
  });

  it('paging mode: la57 in /proc/cpuinfo exactly for 5-level targets', async () => {
    const vm = openLabVm(target.name);
    const r = await vm.run('grep -o -m1 la57 /proc/cpuinfo');
    if (target.paging === 5) {
      expect(r.exitCode).toBe(0);
      expect(r.stdout.trim()).toBe('la57');
    } else {
      expect(r.exitCode).not.toBe(0);
      expect(r.stdout.trim()).toBe('');
    }
  });

  it('pause/resume via QMP', async () => {
    const vm = openLabVm(target.name);
    await vm.pause();
    try {
      expect(await vm.runState()).toBe('paused');
      // a paused guest does not answer; the call times out with E_LAB
      const err = await vm.run('true', { timeoutMs: 1500 }).catch((e: unknown) => e);
      expect(isPmiError(err) && err.code === 'E_LAB').toBe(true);
    } finally {
      await vm.resume();
    }
    expect(await vm.runState()).toBe('running');
    const r = await vm.run('echo back');
    expect(r.stdout).toBe('back\n');
  });

  it('the RAM snapshot has the RAM size and holds the kernel banner', () => {
    const st = statSync(target.snapshot_path);
    expect(st.size).toBe(target.memory_bytes);
    const t = recorded(target);
    const ram = readFileSync(target.snapshot_path);
    expect(ram.indexOf(Buffer.from(t.version.slice(0, 40), 'latin1'))).toBeGreaterThan(0);
  });
});

describe('ground truth across targets', () => {
  it('targets booting the same kernel record the same BTF hash, different kernels different ones', () => {
    const byKernel = new Map<string, Set<string>>();
    for (const t of targets) {
      const h = recorded(t).btf_vmlinux_sha256;
      byKernel.set(t.kernel, (byKernel.get(t.kernel) ?? new Set()).add(h));
    }
    for (const [k, hashes] of byKernel) expect(hashes.size, k).toBe(1);
    const all = [...byKernel.values()].map((h) => [...h][0]);
    expect(new Set(all).size).toBe(all.length);
  });
});
