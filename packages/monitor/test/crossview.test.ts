/**
 * The cross-view checks' decisions as pure functions: what is tampering, what is a warning, what is
 * an event and what is nothing — hidden tasks over two reads, credential elevation with and
 * without a baseline, shared and misplaced creds, hidden modules and module load/unload events —
 * and the module-space scan's primitives (self-pointer search, name validation, module space).
 */
import { describe, expect, it } from 'vitest';
import {
  compoundHead,
  findSelfPointers,
  judgeCredentials,
  judgeElevation,
  judgeHiddenTasks,
  judgeModules,
  moduleNameOf,
  moduleSpace,
  MODULES_END,
  MODULES_VADDR_1G,
  MODULES_VADDR_512M,
  type CredPlace,
  type CredTask,
  type ModuleSighting,
  type TaskSighting,
} from '../src/index.js';

describe('hidden_processes: judgeHiddenTasks', () => {
  const hidden: TaskSighting = {
    task: '0xffff888001234000',
    pid: 170,
    tgid: 170,
    comm: 'evil',
    kthread: false,
    exiting: false,
    views: ['pid_idr', 'rq_curr:1'],
  };

  it('seen on both reads, live, not in the list → tampering (high) naming pid, comm, task and views', () => {
    const v = judgeHiddenTasks([hidden], [hidden]);
    expect(v.raced).toBe(0);
    expect(v.findings).toHaveLength(1);
    const f = v.findings[0];
    expect(f).toMatchObject({
      check: 'hidden_processes',
      kind: 'tampering',
      severity: 'high',
      address: hidden.task,
      key: `hidden_task:170:${hidden.task}`,
    });
    expect(f.evidence).toContain('pid 170 (evil)');
    expect(f.evidence).toContain(hidden.task);
    expect(f.evidence).toContain('the pid IDR, run queue curr of cpu 1');
  });

  it('a thread is named as a thread of its process', () => {
    const t = { ...hidden, pid: 171, comm: 'evil-worker', views: ['pid_idr'] };
    const f = judgeHiddenTasks([t], [t]).findings[0];
    expect(f.evidence).toMatch(/^thread 171 of pid 170 \(evil-worker\)/);
  });

  it('gone (or in the list again) on the second read → nothing: a fork/exit raced the reads', () => {
    expect(judgeHiddenTasks([hidden], [])).toEqual({ findings: [], raced: 1 });
    // a different task at the same address (freed and reused) is not a confirmation
    expect(judgeHiddenTasks([hidden], [{ ...hidden, pid: 999 }]).findings).toEqual([]);
  });

  it('exiting: a warning when the pid IDR has it, nothing when only a CPU runs it', () => {
    const dying = { ...hidden, exiting: true };
    const v = judgeHiddenTasks([dying], [dying]);
    expect(v.findings.map((f) => [f.kind, f.severity])).toEqual([['warning', 'low']]);
    const onCpu = { ...dying, views: ['rq_curr:0', 'cpu_current:0'] };
    expect(judgeHiddenTasks([onCpu], [onCpu]).findings).toEqual([]);
    // exiting on the second read only is still not tampering
    expect(judgeHiddenTasks([hidden], [dying]).findings.map((f) => f.kind)).toEqual(['warning']);
  });

  it('the task list was cut short where the task would be → a warning, not tampering', () => {
    const t = { ...hidden, listIncomplete: true };
    expect(judgeHiddenTasks([t], [t]).findings.map((f) => [f.kind, f.severity])).toEqual([['warning', 'medium']]);
  });
});

function task(o: Partial<CredTask> = {}): CredTask {
  return {
    pid: 400,
    tgid: 400,
    comm: 'sh',
    task: '0xffff888000400000',
    start: '5000000000',
    kthread: false,
    exiting: false,
    realCred: '0xffff888000c00000',
    cred: '0xffff888000c00000',
    uid: 1000,
    euid: 1000,
    suid: 1000,
    userUid: 1000,
    capSetuid: false,
    execId: '2',
    parent: { pid: 300, comm: 'bash', uid: 1000, euid: 1000, reaper: false, younger: false },
    exeSetuidRoot: false,
    ...o,
  };
}

describe('credentials: judgeElevation', () => {
  it('not root → nothing', () => {
    expect(judgeElevation(task())).toBeUndefined();
  });

  it('root with a root parent, a setuid-root executable, or as a kernel thread → nothing', () => {
    const root = { uid: 0, euid: 0, suid: 0, userUid: 0 };
    expect(judgeElevation(task({ ...root, parent: { ...task().parent!, uid: 0, euid: 0 } }))).toBeUndefined();
    expect(judgeElevation(task({ ...root, parent: { ...task().parent!, euid: 0 } }))).toBeUndefined();
    expect(judgeElevation(task({ euid: 0, exeSetuidRoot: true }))).toBeUndefined(); // passwd, su, sudo
    expect(judgeElevation(task({ ...root, kthread: true, parent: null, exeSetuidRoot: null }))).toBeUndefined();
    expect(judgeElevation(task({ ...root, exiting: true }))).toBeUndefined();
  });

  it('root, non-root parent, ordinary executable → tampering (no fork or exec explains it)', () => {
    const f = judgeElevation(task({ uid: 0, euid: 0, suid: 0, userUid: 0 }))!;
    expect(f).toMatchObject({ check: 'credentials', kind: 'tampering', severity: 'high', address: task().task });
    expect(f.key).toBe('cred_elevated:400:5000000000');
    expect(f.evidence).toMatch(/real parent pid 300 \(bash\) is uid 1000.*not setuid-root/);
  });

  it('the parent may not be the original (a reaper, younger) or the executable is unknown → a warning', () => {
    const root = { uid: 0, euid: 0, suid: 0, userUid: 0 };
    for (const t of [
      task({ ...root, parent: { ...task().parent!, reaper: true } }),
      task({ ...root, parent: { ...task().parent!, younger: true } }),
      task({ ...root, exeSetuidRoot: null }),
      task({ ...root, parent: null }),
    ])
      expect(judgeElevation(t)).toMatchObject({ kind: 'warning', severity: 'low' });
  });

  it('uid 0 in a cred whose user_struct is another uid → tampering even with a root parent (edited in place)', () => {
    const f = judgeElevation(
      task({ uid: 0, euid: 0, suid: 0, userUid: 1000, parent: { ...task().parent!, uid: 0, euid: 0 } }),
    )!;
    expect(f.kind).toBe('tampering');
    expect(f.evidence).toMatch(/user_struct is uid 1000: the cred was edited in place/);
    expect(f.old).toBe('user_struct uid 1000');
  });

  it('baseline: non-root before, root now, same self_exec_id → tampering; after an exec → the static rules', () => {
    const rootNow = { uid: 0, euid: 0, suid: 0, userUid: 0, parent: { ...task().parent!, uid: 0, euid: 0 } };
    const f = judgeElevation(task(rootNow), [1000, '2'])!;
    expect(f).toMatchObject({ kind: 'tampering', old: 'uid 1000' });
    expect(f.evidence).toMatch(/was uid 1000 .* in the baseline and has not exec'd since/);
    // exec'd since (self_exec_id changed): a root parent explains it
    expect(judgeElevation(task(rootNow), [1000, '1'])).toBeUndefined();
    // no self_exec_id in this kernel: the transition rule does not apply
    expect(judgeElevation(task({ ...rootNow, execId: null }), [1000, null])).toBeUndefined();
    // kernel threads are never judged by the transition rule
    expect(judgeElevation(task({ ...rootNow, kthread: true }), [1000, '2'])).toBeUndefined();
  });
});

describe('credentials: judgeCredentials (sharing, placement, baseline state)', () => {
  const INIT = '0xffffffff82a5c000';
  const jar = (...creds: string[]): Map<string, CredPlace> =>
    new Map(creds.map((c) => [c, c === INIT ? { kind: 'init_cred' } : { kind: 'cred_jar' }] as const));
  const init = task({
    pid: 0,
    tgid: 0,
    comm: 'swapper/0',
    kthread: true,
    uid: 0,
    euid: 0,
    suid: 0,
    userUid: 0,
    realCred: INIT,
    cred: INIT,
    parent: null,
    exeSetuidRoot: null,
  });

  it('threads of one group share a cred; each process has its own → nothing; state keeps the non-root tasks', () => {
    const a = task({ pid: 500, tgid: 500, realCred: '0xffff888000c00100', cred: '0xffff888000c00100' });
    const a1 = { ...a, pid: 501 };
    const b = task({ pid: 600, tgid: 600, realCred: '0xffff888000c00200', cred: '0xffff888000c00200' });
    const r = judgeCredentials([init, a, a1, b], jar(INIT, a.realCred, b.realCred), INIT);
    expect(r.findings).toEqual([]);
    expect(Object.keys(r.state.nonroot).sort()).toEqual(['500:5000000000', '501:5000000000', '600:5000000000']);
    expect(r.state.nonroot['500:5000000000']).toEqual([1000, '2']);
  });

  it('root, setuid-saved or CAP_SETUID tasks are not kept in the state (regaining root is theirs to do)', () => {
    const r = judgeCredentials(
      [task({ pid: 1, suid: 0 }), task({ pid: 2, capSetuid: true }), task({ pid: 3 })],
      jar(task().realCred),
      INIT,
    );
    expect(Object.keys(r.state.nonroot)).toEqual(['3:5000000000']);
  });

  it('a real_cred shared by two thread groups → tampering; init_cred on a user task → tampering', () => {
    const shared = '0xffff888000c00300';
    const a = task({ pid: 500, tgid: 500, realCred: shared, cred: shared });
    const b = task({ pid: 600, tgid: 600, realCred: shared, cred: shared, uid: 0, euid: 0, suid: 0, userUid: 0 });
    const r = judgeCredentials([init, a, b], jar(INIT, shared), INIT);
    const f = r.findings.find((x) => x.key === `cred_shared:${shared}`)!;
    expect(f).toMatchObject({ kind: 'tampering', severity: 'high', address: shared });
    expect(f.evidence).toMatch(/shared by 2 thread groups: pid 500 .*pid 600/);
    const c = task({ pid: 700, tgid: 700, realCred: INIT, cred: INIT, uid: 0, euid: 0, suid: 0, userUid: 0 });
    const r2 = judgeCredentials([init, c], jar(INIT), INIT);
    const g = r2.findings.find((x) => x.key === `cred_shared:${INIT}`)!;
    expect(g).toMatchObject({ kind: 'tampering', symbol: 'init_cred' });
    expect(g.evidence).toMatch(/^init_cred .* is the real_cred of pid 700 \(sh\)/);
    expect(g.evidence).not.toContain('swapper');
  });

  it('a subjective cred (override_creds) shared across groups is not judged as sharing', () => {
    const over = '0xffff888000c00400';
    const a = task({ pid: 500, tgid: 500, realCred: '0xffff888000c00100', cred: over });
    const b = task({ pid: 600, tgid: 600, realCred: '0xffff888000c00200', cred: over });
    const r = judgeCredentials([a, b], jar(a.realCred, b.realCred, over), INIT);
    expect(r.findings).toEqual([]);
  });

  it('a cred outside the direct map or in another slab cache → tampering; an unreadable page → a warning', () => {
    const a = task({ pid: 500, tgid: 500, realCred: '0xffffffffc0a00000', cred: '0xffffffffc0a00000' });
    const b = task({ pid: 600, tgid: 600, realCred: '0xffff888000c00200', cred: '0xffff888000c00200' });
    const c = task({ pid: 700, tgid: 700, realCred: '0xffff888000c00300', cred: '0xffff888000c00300' });
    const places = new Map<string, CredPlace>([
      [a.realCred, { kind: 'outside', region: 'in module space' }],
      [b.realCred, { kind: 'other_cache', cache: 'kmalloc-192' }],
      [c.realCred, { kind: 'unknown', why: 'its struct page does not read' }],
    ]);
    const r = judgeCredentials([a, b, c], places, INIT);
    expect(r.findings.map((f) => [f.key, f.kind])).toEqual([
      [`cred_place:${a.realCred}`, 'tampering'],
      [`cred_place:${b.realCred}`, 'tampering'],
      [`cred_place:${c.realCred}`, 'warning'],
    ]);
    expect(r.findings[0].evidence).toMatch(/outside the direct map \(in module space\)/);
    expect(r.findings[1].evidence).toMatch(/in slab cache 'kmalloc-192', not cred_jar/);
  });

  it('baseline round trip: the state of one pass is the baseline of the next', () => {
    const before = judgeCredentials([task()], jar(task().realCred), INIT).state;
    const now = task({ uid: 0, euid: 0, suid: 0, userUid: 0, parent: { ...task().parent!, uid: 0 } });
    const r = judgeCredentials([now], jar(now.realCred), INIT, before);
    expect(r.findings.map((f) => [f.key, f.kind])).toEqual([['cred_elevated:400:5000000000', 'tampering']]);
    // the same pid with another start time is another task: no transition
    const other = { ...now, start: '9000000000' };
    expect(judgeCredentials([other], jar(now.realCred), INIT, before).findings).toEqual([]);
  });
});

describe('credentials: compoundHead (the slab page of a cred)', () => {
  const vmemmap = 0xffffea0000000000n;
  const page = (pfn: bigint) => vmemmap + pfn * 64n;
  it('a head or order-0 page is itself', () => {
    expect(compoundHead(page(0x1234n), 0n, 64n)).toBe(page(0x1234n));
    expect(compoundHead(page(0x1234n), 0xffff888000001000n, 64n)).toBe(page(0x1234n)); // bit 0 clear: not a tail
  });
  it('compound_head / compound_info as head pointer + 1', () => {
    expect(compoundHead(page(0x1235n), page(0x1234n) + 1n, 64n)).toBe(page(0x1234n));
    expect(compoundHead(page(0x1237n), page(0x1234n) + 1n, 64n)).toBe(page(0x1234n));
  });
  it('compound_info as a mask (power-of-2 struct page, vmemmap optimisation): head = tail & mask', () => {
    const order = 2n;
    const mask = BigInt.asUintN(64, ~((64n << order) - 1n)) | 1n;
    expect(compoundHead(page(0x1236n), mask, 64n)).toBe(page(0x1234n));
    expect(compoundHead(page(0x1235n), mask, 64n)).toBe(page(0x1234n));
  });
  it('neither a pointer near the page nor a usable mask → -1n', () => {
    expect(compoundHead(page(0x1234n), page(0x9999999n) + 1n, 64n)).toBe(-1n); // a "head" after the tail
    expect(compoundHead(page(0x1234n), 0xffff888000001001n, 64n)).toBe(-1n);
  });
});

describe('hidden_modules: judgeModules', () => {
  const m = (name: string, module: string, views: ModuleSighting['views'], state = 'Live'): ModuleSighting => ({
    name,
    module,
    state,
    views,
  });
  const dummy = m('dummy', '0xffffffffc05f8180', ['list', 'kset', 'scan']);
  const crc = m('crc32_generic', '0xffffffffc0600280', ['list', 'kset', 'scan']);

  it('every view agrees → nothing; no baseline → no events', () => {
    expect(judgeModules([dummy, crc], [])).toEqual([]);
  });

  it('in sysfs and/or the scan but not the list, on both reads → tampering (critical)', () => {
    for (const views of [['kset', 'scan'], ['scan'], ['kset']] as ModuleSighting['views'][]) {
      const h = m('pmi_rootkit', '0xffffffffc0700000', views);
      const f = judgeModules([dummy, h], [dummy, h]);
      expect(f).toHaveLength(1);
      expect(f[0]).toMatchObject({
        check: 'hidden_modules',
        kind: 'tampering',
        severity: 'critical',
        address: h.module,
        key: `hidden_module:pmi_rootkit@${h.module}`,
      });
      expect(f[0].evidence).toMatch(/module pmi_rootkit .* not in the modules list/);
    }
  });

  it('not confirmed by the second read (back in the list, or gone) → nothing', () => {
    const h = m('x', '0xffffffffc0700000', ['kset']);
    expect(judgeModules([h], [])).toEqual([]);
    expect(judgeModules([h], [{ ...h, views: ['list', 'kset'] }])).toEqual([]);
  });

  it('hidden but Unformed/Unloading (free_module unlinks before freeing) → a warning', () => {
    const h = m('x', '0xffffffffc0700000', ['scan'], 'Unformed');
    expect(judgeModules([h], [h]).map((f) => [f.kind, f.severity])).toEqual([['warning', 'medium']]);
  });

  it('baseline: a new module → module_loaded event, a vanished one → module_unloaded, never tampering', () => {
    const base = { modules: [dummy, crc].map((x) => ({ name: x.name, module: x.module, views: x.views })) };
    const fresh = m('veth', '0xffffffffc0800000', ['list', 'kset', 'scan']);
    const f = judgeModules([dummy, fresh], [], base);
    expect(f.map((x) => [x.kind, x.severity, x.key])).toEqual([
      ['event', 'info', `module_loaded:veth@${fresh.module}`],
      ['event', 'info', `module_unloaded:crc32_generic@${crc.module}`],
    ]);
    // reloaded at another address: unloaded + loaded
    const again = { ...crc, module: '0xffffffffc0900000' };
    expect(judgeModules([dummy, again], [], base).map((x) => x.key.split(':')[0])).toEqual([
      'module_loaded',
      'module_unloaded',
    ]);
  });

  it('a module hidden since the baseline is tampering, not an unload', () => {
    const base = { modules: [{ name: dummy.name, module: dummy.module, views: dummy.views }] };
    const h = { ...dummy, views: ['kset', 'scan'] as ModuleSighting['views'] };
    expect(judgeModules([h], [h], base).map((f) => f.kind)).toEqual(['tampering']);
  });
});

describe('hidden_modules: scan primitives', () => {
  it('findSelfPointers: 8-byte words holding their own address minus the offset, across a 4 GiB carry', () => {
    const va = 0xffffffffc0001000n;
    const buf = new Uint8Array(4096);
    const dv = new DataView(buf.buffer);
    const off = 0x3a8;
    dv.setBigUint64(0x400, va + 0x400n - BigInt(off), true); // a struct module at va + 0x400 - off
    dv.setBigUint64(0x800, va + 0x800n, true); // points at itself, not at itself − off
    expect(findSelfPointers(buf, va, off)).toEqual([va + 0x400n - BigInt(off)]);
    // a page whose low 32 bits wrap inside the search
    const va2 = 0xfffffffffffff000n - 0x1000n;
    const b2 = new Uint8Array(0x2000);
    new DataView(b2.buffer).setBigUint64(0x1ff8, BigInt.asUintN(64, va2 + 0x1ff8n - 16n), true);
    expect(findSelfPointers(b2, va2, 16)).toEqual([BigInt.asUintN(64, va2 + 0x1ff8n - 16n)]);
    // an unaligned start: only aligned words are considered
    expect(findSelfPointers(buf.subarray(4), va + 4n, off)).toEqual([va + 0x400n - BigInt(off)]);
  });

  it('moduleNameOf: printable and NUL-terminated, else null', () => {
    const n = (s: string, size = 56) => {
      const b = new Uint8Array(size);
      b.set(Buffer.from(s, 'latin1'));
      return b;
    };
    expect(moduleNameOf(n('dummy'))).toBe('dummy');
    expect(moduleNameOf(n(''))).toBeNull();
    expect(moduleNameOf(n('du\x01my'))).toBeNull();
    expect(moduleNameOf(n('a b'))).toBeNull();
    expect(moduleNameOf(n('x'.repeat(56)))).toBeNull(); // no NUL
  });

  it('moduleSpace: 1 GiB image area (KASLR) unless a known module lies below it', () => {
    expect(moduleSpace([0xffffffffc05f6000n])).toEqual({ start: MODULES_VADDR_1G, end: MODULES_END });
    expect(moduleSpace([])).toEqual({ start: MODULES_VADDR_1G, end: MODULES_END });
    expect(moduleSpace([0xffffffffa0004000n])).toEqual({ start: MODULES_VADDR_512M, end: MODULES_END });
  });
});
