/**
 * The TEST-ONLY pmi_rootkit module (lab/rootkit/), proven from INSIDE the guest (ground truth for the
 * integrity-monitor tests): built against each bookworm lab kernel's headers, loaded into a
 * dedicated VM booted here (never into the shared targets of the global setup, which other files
 * read afterwards), then every effect is checked with the guest's own /proc, /sys and kernel log.
 *
 *   PMI_LAB_MATRIX=6.12:4 npx vitest run --project lab lab/test/rootkit.lab.test.ts
 *
 * (the lab project's global setup always boots the PMI_LAB_MATRIX targets; one keeps it small).
 * PMI_ROOTKIT_KERNELS=6.12 limits the kernels (default: 6.1-cloud,6.12).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  buildRootkitModule,
  fetchKernelHeaders,
  isVmProcessAlive,
  KernelHeadersUnsupportedError,
  listLabVms,
  loadRootkit,
  parseRootkitLog,
  rootkitBuildInfo,
  startLabVm,
  startRootkitVictims,
  type LabVm,
  type RootkitLoadResult,
} from '@pmi/lab';
import type { LabTarget } from './targets.js';

const KERNELS = (process.env.PMI_ROOTKIT_KERNELS || '6.1-cloud,6.12')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const shared: LabTarget[] = inject('labTargets');
const log = (m: string) => process.stderr.write(`[rootkit] ${m}\n`);
const ours: string[] = [];

/** Messages a broken kernel prints (sysrq-t's own "Call Trace:" dumps are checked separately). */
const BAD_BEFORE_SYSRQ =
  /Oops|BUG:|general protection|Kernel panic|list_(add|del) corruption|WARNING:|Call Trace|refcount_t:|segfault/;
const BAD_AFTER_SYSRQ = /Oops|BUG:|general protection|Kernel panic|list_(add|del) corruption|WARNING:/;

const hex = (v: bigint) => `0x${v.toString(16)}`;

describe('fetchKernelHeaders', () => {
  it('refuses 5.10 and 7.x with a typed error that says why', async () => {
    for (const k of ['5.10', '7.x']) {
      const e = await fetchKernelHeaders(k).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(KernelHeadersUnsupportedError);
      expect((e as KernelHeadersUnsupportedError).code).toBe('E_LAB');
      expect((e as Error).message).toMatch(/gcc-(10|16).*bookworm/);
    }
  });
});

describe('parseRootkitLog', () => {
  it('reads the addresses of the last load', () => {
    const text = [
      '[    1.0] pmi_rootkit: TEST-ONLY module loading: module=ffffffffc0000040 name=pmi_rootkit init=ffffffffc0004010 hook=ffffffffc0002010',
      '[   14.584277] pmi_rootkit: loading out-of-tree module taints kernel.',
      '[   14.587469] pmi_rootkit: TEST-ONLY module loading: module=ffffffffc027c040 name=pmi_rootkit init=ffffffffc0280010 hook=ffffffffc027a010',
      '[   14.626009] pmi_rootkit: kallsyms_lookup_name=ffffffff937da0e0 tasklist_lock=ffffffff95206080 module_mutex=ffffffff9532eda0',
      '[   14.627023] pmi_rootkit: syscall nr=110 sys_call_table=ffffffff946003c0 entry=ffffffff94600730 old=ffffffff936eaf00 new=ffffffffc027a010 alias=ffffd1e2c005d730 now=ffffffffc027a010',
      '[   14.627776] pmi_rootkit: hide_pid pid=182 comm=sleep task=ffff891c423f4200 tasks=ffff891c423f4ab0 prev=ffff891c42484ab0 next=ffff891c424029b0 init_task=ffffffff95210940',
      '[   14.628321] pmi_rootkit: root_pid pid=183 comm=sleep task=ffff891c42402100 real_cred=ffff891c425663c0 cred=ffff891c425663c0 uid=1000->0 euid=1000->0 gid=1000->0',
      '[   14.628817] pmi_rootkit: hide_self module=ffffffffc027c040 list=ffffffffc027c048 prev=ffffffff9532ed80 next=ffffffffc0276288 kobj=ffffffffc027c090',
      '[   14.629409] pmi_rootkit: done syscall_nr=110 hide_pid=182 root_pid=183 hide_self=1',
    ].join('\r\n');
    const r = parseRootkitLog(text);
    expect(r.done).toBe(true);
    expect(r.errors).toEqual([]);
    expect(r.lines).toHaveLength(7);
    expect(r.loaded).toEqual({
      module: 0xffffffffc027c040n,
      name: 'pmi_rootkit',
      init: 0xffffffffc0280010n,
      hook: 0xffffffffc027a010n,
    });
    expect(r.syscall).toMatchObject({ nr: 110, entry: 0xffffffff94600730n, old: 0xffffffff936eaf00n });
    expect(r.hiddenTask).toMatchObject({ pid: 182, comm: 'sleep', tasks: 0xffff891c423f4ab0n });
    expect(r.rootTask).toMatchObject({
      pid: 183,
      oldUid: 1000,
      oldEuid: 1000,
      oldGid: 1000,
      cred: 0xffff891c425663c0n,
    });
    expect(r.hiddenModule).toMatchObject({ module: 0xffffffffc027c040n, kobj: 0xffffffffc027c090n });
    expect(parseRootkitLog('pmi_rootkit: hide_pid 99: no such task\n')).toMatchObject({
      done: false,
      errors: ['hide_pid 99: no such task'],
    });
  });
});

for (const kernel of KERNELS) {
  describe.sequential(`pmi_rootkit in a ${kernel} guest`, () => {
    let vm: LabVm | undefined;
    let victims: { hidePid: number; rootPid: number };
    let load: RootkitLoadResult;
    const kallsyms = new Map<string, bigint>();

    beforeAll(async () => {
      let t = Date.now();
      const headers = await fetchKernelHeaders(kernel, { log });
      log(
        `${kernel}: headers ${headers.packages.join(' + ')} ${headers.version}: ` +
          (headers.cached
            ? `cached (${Date.now() - t} ms)`
            : `downloaded in ${headers.downloadMs} ms, extracted in ${headers.extractMs} ms`),
      );
      t = Date.now();
      const ko = await buildRootkitModule(kernel, { log });
      const info = await rootkitBuildInfo(ko);
      log(
        `${kernel}: ${ko}: ${info.bytes} bytes, vermagic '${info.vermagic}', built in ${info.build_ms} ms (this call ${Date.now() - t} ms)`,
      );
      t = Date.now();
      const name = `rk${process.pid}-${kernel.replace(/\./g, '')}`;
      ours.push(name);
      vm = await startLabVm({ kernel, paging: 4, name, collectTruth: false, log });
      log(`${kernel}: ${name} booted in ${Date.now() - t} ms`);
      victims = await startRootkitVictims(vm);
      const ks = await vm.run(
        "grep -wE 'sys_call_table|__x64_sys_getppid|kallsyms_lookup_name|tasklist_lock|module_mutex|init_task' /proc/kallsyms",
      );
      for (const line of ks.stdout.split('\n')) {
        const [a, , n] = line.trim().split(/\s+/);
        if (n) kallsyms.set(n, BigInt(`0x${a}`));
      }
      load = await loadRootkit(vm, ko, victims);
      log(
        `${kernel}: victims ${JSON.stringify(victims)}; .ko copied in ${load.transferMs} ms, insmod ${load.insmodMs} ms; ` +
          `guest lockdown '${load.guest.lockdown}', sig_enforce ${load.guest.sig_enforce}`,
      );
      for (const l of load.log.lines) log(`${kernel}: pmi_rootkit: ${l}`);
    }, 900_000);

    afterAll(async () => {
      await vm?.stop();
    });

    it('logs every action, at the addresses the guest kernel itself gives', () => {
      const r = load.log;
      expect(r.errors).toEqual([]);
      expect(r.done).toBe(true);
      expect(r.loaded?.name).toBe('pmi_rootkit');
      // a. sys_call_table[__NR_getppid] now holds the module's hook, which forwards to the original
      expect(kallsyms.get('sys_call_table')).toBeDefined();
      expect(r.kallsyms?.kallsymsLookupName).toBe(kallsyms.get('kallsyms_lookup_name'));
      expect(r.kallsyms?.tasklistLock).toBe(kallsyms.get('tasklist_lock'));
      expect(r.kallsyms?.moduleMutex).toBe(kallsyms.get('module_mutex'));
      expect(r.syscall?.nr).toBe(110);
      expect(r.syscall?.table).toBe(kallsyms.get('sys_call_table'));
      expect(r.syscall?.entry).toBe(r.syscall!.table + 110n * 8n);
      expect(r.syscall?.old).toBe(kallsyms.get('__x64_sys_getppid'));
      expect(r.syscall?.new).toBe(r.loaded?.hook);
      expect(r.syscall?.now).toBe(r.syscall?.new);
      expect(r.syscall!.new >= 0xffffffffc0000000n, `hook ${hex(r.syscall!.new)} in module space`).toBe(true);
      // b. + d. the tasks it was asked to touch
      expect(r.hiddenTask).toMatchObject({ pid: victims.hidePid, comm: 'sleep' });
      expect(r.hiddenTask?.initTask).toBe(kallsyms.get('init_task'));
      expect(r.rootTask).toMatchObject({
        pid: victims.rootPid,
        comm: 'sleep',
        oldUid: 1000,
        oldEuid: 1000,
        oldGid: 1000,
      });
      // c. its own struct module
      expect(r.hiddenModule?.module).toBe(r.loaded?.module);
      expect(r.hiddenModule?.list).toBe(r.loaded!.module + 8n);
      // the lines are in the kernel log itself
      expect(load.dmesg).toMatch(/pmi_rootkit: syscall nr=110 sys_call_table=[0-9a-f]{16} /);
      expect(load.dmesg).toMatch(/pmi_rootkit: done /);
    });

    it('raises root_pid to uid/gid 0 in place', async () => {
      const st = await vm!.run(`cat /proc/${victims.rootPid}/status`);
      expect(st.stdout).toMatch(/^Name:\s+sleep$/m);
      expect(st.stdout).toMatch(/^Uid:\s+0\s+0\s+0\s+0$/m);
      expect(st.stdout).toMatch(/^Gid:\s+0\s+0\s+0\s+0$/m);
      // capabilities were not touched (a uid-0 process without them: an anomaly a check can see)
      expect(st.stdout).toMatch(/^CapEff:\s+0+$/m);
    });

    it('is gone from /proc/modules, lsmod and kallsyms while /sys/module/pmi_rootkit stays', async () => {
      const r = await vm!.run(
        [
          'echo "== modules"; cat /proc/modules',
          'echo "== lsmod"; lsmod',
          'echo "== sys"; ls -d /sys/module/pmi_rootkit && cat /sys/module/pmi_rootkit/parameters/hide_pid /sys/module/pmi_rootkit/parameters/root_pid',
          'echo "== kallsyms"; grep -c "\\[pmi_rootkit\\]" /proc/kallsyms',
          'echo "== tainted"; cat /proc/sys/kernel/tainted',
        ].join('\n'),
      );
      const part = (n: string) => r.stdout.split(`== ${n}\n`)[1]?.split('\n==')[0] ?? '';
      expect(part('modules')).toMatch(/^dummy /m); // the workload modules are listed…
      expect(part('modules')).not.toMatch(/pmi_rootkit/); // …ours is not
      expect(part('lsmod')).not.toMatch(/pmi_rootkit/);
      expect(part('sys').trim().split('\n')).toEqual([
        '/sys/module/pmi_rootkit',
        String(victims.hidePid),
        String(victims.rootPid),
      ]);
      expect(part('kallsyms').trim()).toBe('0'); // module symbols are listed through the module list
      expect(Number(part('tainted')) & 4096).toBe(4096); // TAINT_OOT_MODULE
    });

    it('unlinks hide_pid from the task list (sysrq-t skips it) while /proc still shows it', async () => {
      const before = await vm!.run('dmesg');
      expect(before.stdout).not.toMatch(BAD_BEFORE_SYSRQ);
      const proc = await vm!.run(
        `cat /proc/${victims.hidePid}/status; ps -o pid,user,comm | grep -w ${victims.hidePid}`,
      );
      expect(proc.stdout).toMatch(/^Name:\s+sleep$/m); // the pid IDR still has it
      expect(proc.stdout).toMatch(new RegExp(`^\\s*${victims.hidePid}\\s+root\\s+sleep`, 'm'));
      // sysrq-t walks for_each_process_thread (init_task.tasks): one "task:" line per task
      const dump = await vm!.run('echo t > /proc/sysrq-trigger; dmesg', { timeoutMs: 120_000 });
      const text = dump.stdout.slice(dump.stdout.lastIndexOf('Show State'));
      const pids = new Set(
        [...text.matchAll(/task:.*?\bpid:\s*(\d+)/g)].map((m) => Number(m[1])).filter((p) => Number.isFinite(p)),
      );
      log(`${kernel}: sysrq-t listed ${pids.size} tasks`);
      expect(pids.size).toBeGreaterThan(20);
      expect(pids.has(1)).toBe(true);
      expect(pids.has(victims.rootPid)).toBe(true);
      expect(pids.has(victims.hidePid)).toBe(false);
      expect(text).not.toMatch(BAD_AFTER_SYSRQ);
    });

    it('leaves the guest running: getppid answers (the table is not what dispatches), no oops', async () => {
      const r = await vm!.run(
        'echo "self=$$"; sh -c \'echo "ppid=$PPID"\'; cat /sys/module/pmi_rootkit/parameters/hook_calls',
      );
      const self = /self=(\d+)/.exec(r.stdout)?.[1];
      expect(self).toBeDefined();
      expect(r.stdout).toContain(`ppid=${self}`);
      // x64_sys_call's switch dispatches on these kernels: the redirected entry is never called
      expect(r.stdout.trim().split('\n').at(-1)).toBe('0');
      await new Promise((res) => setTimeout(res, 2000));
      const again = await vm!.run(`echo alive; cat /proc/${victims.hidePid}/stat`);
      expect(again.stdout).toMatch(/^alive$/m);
      expect(again.stdout).toMatch(new RegExp(`^${victims.hidePid} \\(sleep\\) S `, 'm'));
      expect(vm!.isPanicked()).toBe(false);
      expect(vm!.serialLog()).not.toMatch(BAD_AFTER_SYSRQ);
    });

    it('refuses a second load (the hidden module still has its sysfs entry)', async () => {
      const ko = await buildRootkitModule(kernel);
      await expect(loadRootkit(vm!, ko, {})).rejects.toThrow(/pmi_rootkit exists: already loaded/);
    });
  });
}

describe('shared lab targets', () => {
  it('were not used: the rootkit VMs are our own and the shared ones still run', () => {
    const running = new Set(listLabVms().map((v) => v.name));
    for (const t of shared) {
      expect(ours).not.toContain(t.name);
      expect(running.has(t.name), `shared target ${t.name} still running`).toBe(true);
      const st = listLabVms().find((v) => v.name === t.name);
      expect(st && isVmProcessAlive(st)).toBe(true);
    }
  });
});
