/**
 * credentials: task credentials that the kernel's own rules cannot explain.
 *
 * Every task of the task list (threads included) and `init_task` is read with its objective
 * credentials (`real_cred`: what /proc and permission checks of others see), its subjective `cred`,
 * its real parent's credentials and its executable's inode (`mm->exe_file->f_inode`).
 *
 * (a) Elevation — a task with uid 0 or euid 0 (global kuids: a container's root is not uid 0):
 *   1. `cred->user` (the user_struct the kernel keeps for the real uid; set_user() replaces it on
 *      every real-uid change) is not uid `cred->uid`: the cred was edited in place → tampering.
 *   2. With a baseline entry for the same task (pid + start_time) that was not root (uid, euid and
 *      suid all non-zero, no CAP_SETUID) and the same `self_exec_id` (no exec since) → tampering:
 *      nothing but an exec of a setuid file or a privileged setuid call raises a task's uid.
 *   3. Legitimate, nothing: a kernel thread; an exiting task; a real parent with uid 0 or euid 0
 *      (fork copies the parent's creds); an executable that is setuid and owned by uid 0.
 *   4. The parent may not be the original one — it is a child reaper (pid-namespace init,
 *      SIGNAL_UNKILLABLE) or a subreaper, or younger than the task — or the executable is unknown
 *      → a warning (the fork that gave the creds cannot be checked).
 *   5. Otherwise → tampering.
 *   Known limit: a process that exec'd a setuid-root program which then exec'd a non-setuid program
 *   in place (pkexec, doas) looks like 5 when its parent is not root; so does a file with file
 *   capabilities (cap_setuid) that called setuid(0).
 *
 * (b) Cred objects:
 *   - shared: fork gives every child its own cred (copy_creds → prepare_creds) unless CLONE_THREAD,
 *     where the thread shares its creator's. So one `real_cred` may be shared only within one
 *     thread group; shared across thread groups (including a task using `init_cred`, which is
 *     init_task's) → tampering. The subjective `cred` is left out of this: override_creds() puts
 *     one cred (e.g. overlayfs' mounter creds) on many tasks for the length of a call.
 *   - where it lives: every cred comes from the `cred_jar` slab cache (prepare_creds,
 *     prepare_kernel_cred) except the static `init_cred`. A cred (real or subjective) outside the
 *     direct map (kernel image, module space, vmalloc) or on a page whose slab cache is not
 *     `cred_jar` (the cache the kernel's `cred_jar` pointer names: slab merging can make it a cache
 *     named otherwise — 'pid' on the lab's 7.x) → tampering. The page is found through vmemmap
 *     (`struct slab` where BTF has it, else `struct page`; for a tail page its head, through
 *     `compound_head`, or `compound_info` where BTF has that instead). A page that does not read
 *     → a warning.
 *
 * A tampering finding counts only when a second read finds it again (see run()).
 */
import { isPmiError, PmiError } from '@pmi/core';
import type { Layout, StructView } from '@pmi/kernel';
import { PF_KTHREAD, taskLayout, walkTasks } from '@pmi/linux';
import { vaHex, type Finding } from '../model.js';
import type { Check, CheckContext, CheckOutcome } from './types.js';
import { PF_EXITING, settled } from './processes.js';

export const CREDENTIALS = 'credentials';

/** S_ISUID (include/uapi/linux/stat.h). */
const S_ISUID = 0o4000;
/** SIGNAL_UNKILLABLE (include/linux/sched/signal.h): set on each pid namespace's init. */
const SIGNAL_UNKILLABLE = 0x00000040;
/** CAP_SETUID (include/uapi/linux/capability.h). */
const CAP_SETUID = 7;

/** One task as the credential rules see it (plain values: the decision functions are pure). */
export interface CredTask {
  pid: number;
  tgid: number;
  comm: string;
  /** task_struct, "0x…". */
  task: string;
  /** task->start_time (ns since boot, monotonic), decimal: with pid, identifies the task across passes. */
  start: string;
  kthread: boolean;
  exiting: boolean;
  /** real_cred (objective) and cred (subjective), "0x…". */
  realCred: string;
  cred: string;
  uid: number;
  euid: number;
  suid: number;
  /** real_cred->user->uid; null when it did not read. */
  userUid: number | null;
  /** CAP_SETUID in real_cred->cap_effective. */
  capSetuid: boolean;
  /** task->self_exec_id (bumped by every exec), decimal; null when the kernel has none. */
  execId: string | null;
  parent: {
    pid: number;
    comm: string;
    uid: number;
    euid: number;
    /** A child reaper (SIGNAL_UNKILLABLE) or subreaper: the task may have been reparented to it. */
    reaper: boolean;
    /** Started after the task: it cannot be the task's original parent. */
    younger: boolean;
  } | null;
  /** The executable is setuid and owned by uid 0; null when there is none or it did not read. */
  exeSetuidRoot: boolean | null;
}

/** Where a cred object lives (see the file comment). */
export type CredPlace =
  | { kind: 'init_cred' }
  | { kind: 'cred_jar' }
  | { kind: 'other_cache'; cache: string }
  | { kind: 'outside'; region: string }
  | { kind: 'unknown'; why: string };

/** Baseline: tasks that were not root, by `pid:start` → [uid, self_exec_id]. */
export interface CredentialsState {
  nonroot: Record<string, [number, string | null]>;
}

const isRoot = (t: { uid: number; euid: number }) => t.uid === 0 || t.euid === 0;

function who(t: CredTask): string {
  return `${t.pid === t.tgid ? `pid ${t.pid}` : `thread ${t.pid} of pid ${t.tgid}`} (${t.comm})`;
}

/** The elevation rules (a) for one task; undefined when it is legitimate or not root. */
export function judgeElevation(t: CredTask, before?: [number, string | null]): Finding | undefined {
  if (!isRoot(t)) return undefined;
  const base = {
    check: CREDENTIALS,
    address: t.task,
    symbol: null,
    key: `cred_elevated:${t.pid}:${t.start}`,
    new: `uid ${t.uid} euid ${t.euid}`,
  };
  const ids = `uid ${t.uid}, euid ${t.euid}`;
  // rules 1 and 2: either is proof; both are named when both hold
  const proofs: string[] = [];
  let old: string | undefined;
  if (t.userUid !== null && t.userUid !== t.uid) {
    proofs.push(
      `the cred's user_struct is uid ${t.userUid}: the cred was edited in place (set_user() would have replaced it)`,
    );
    old = `user_struct uid ${t.userUid}`;
  }
  const transition = before !== undefined && before[0] !== 0 && before[1] === t.execId && t.execId !== null;
  if (transition && !t.kthread) {
    proofs.push(
      `it was uid ${before[0]} (not root, no CAP_SETUID) in the baseline and has not exec'd since (self_exec_id ${t.execId})`,
    );
    old = `uid ${before[0]}`;
  }
  if (proofs.length > 0)
    return {
      ...base,
      kind: 'tampering',
      severity: 'high',
      old,
      evidence: `${who(t)} task ${t.task} has ${ids} in cred ${t.realCred}, but ${proofs.join('; and ')}`,
    };
  if (t.kthread || t.exiting) return undefined;
  const p = t.parent;
  if (p && isRoot(p)) return undefined;
  if (t.exeSetuidRoot === true) return undefined;
  const parentText = p
    ? `its real parent pid ${p.pid} (${p.comm}) is uid ${p.uid}, euid ${p.euid}`
    : 'no real parent read';
  if (!p || p.reaper || p.younger || t.exeSetuidRoot === null)
    return {
      ...base,
      kind: 'warning',
      severity: 'low',
      evidence: `${who(t)} task ${t.task} has ${ids}; ${parentText}${p?.reaper ? ' (a child reaper: reparented?)' : p?.younger ? ' (younger than the task: reparented)' : ''}${t.exeSetuidRoot === null ? ', its executable is unknown' : ', its executable is not setuid-root'}: not judged`,
    };
  return {
    ...base,
    kind: 'tampering',
    severity: 'high',
    evidence: `${who(t)} task ${t.task} has ${ids}, but ${parentText} and its executable is not setuid-root: no fork or exec explains it`,
  };
}

/**
 * All credential rules over one pass: elevation per task, shared real_creds across thread groups,
 * creds outside cred_jar. `places` maps every cred address ("0x…") to where it lives; `initCred`
 * is `&init_cred`. Returns the findings and the state for the next baseline.
 */
export function judgeCredentials(
  tasks: readonly CredTask[],
  places: ReadonlyMap<string, CredPlace>,
  initCred: string,
  baseline?: CredentialsState,
): { findings: Finding[]; state: CredentialsState } {
  const findings: Finding[] = [];
  const state: CredentialsState = { nonroot: {} };
  for (const t of tasks) {
    const key = `${t.pid}:${t.start}`;
    const f = judgeElevation(t, baseline?.nonroot[key]);
    if (f) findings.push(f);
    if (t.uid !== 0 && t.euid !== 0 && t.suid !== 0 && !t.capSetuid) state.nonroot[key] = [t.uid, t.execId];
  }
  // shared real_creds
  const byCred = new Map<string, CredTask[]>();
  for (const t of tasks) {
    const l = byCred.get(t.realCred);
    if (l) l.push(t);
    else byCred.set(t.realCred, [t]);
  }
  for (const [cred, users] of byCred) {
    const groups = new Set(users.map((u) => u.tgid));
    if (groups.size <= 1) continue;
    const owner = cred === initCred ? users.find((u) => u.pid === 0) : undefined;
    const strangers = owner ? users.filter((u) => u.tgid !== 0) : users;
    const names = strangers
      .slice(0, 8)
      .map((u) => `${who(u)} task ${u.task}`)
      .join(', ');
    findings.push({
      check: CREDENTIALS,
      kind: 'tampering',
      severity: 'high',
      address: cred,
      symbol: cred === initCred ? 'init_cred' : null,
      key: `cred_shared:${cred}`,
      evidence:
        cred === initCred
          ? `init_cred (init_task's creds) is the real_cred of ${names}${strangers.length > 8 ? ` and ${strangers.length - 8} more` : ''}: every forked task gets its own copy`
          : `real_cred ${cred} is shared by ${groups.size} thread groups: ${names}${users.length > 8 ? ` and ${users.length - 8} more` : ''} (only threads of one group share creds)`,
    });
  }
  // where creds live
  const usersOf = new Map<string, CredTask[]>();
  for (const t of tasks)
    for (const c of new Set([t.realCred, t.cred])) {
      const l = usersOf.get(c);
      if (l) l.push(t);
      else usersOf.set(c, [t]);
    }
  for (const [cred, users] of usersOf) {
    const place = places.get(cred);
    if (!place || place.kind === 'cred_jar') continue;
    if (place.kind === 'init_cred') continue; // who may use it: the sharing rule
    const names = users
      .slice(0, 4)
      .map((u) => who(u))
      .join(', ');
    if (place.kind === 'unknown') {
      findings.push({
        check: CREDENTIALS,
        kind: 'warning',
        severity: 'low',
        address: cred,
        symbol: null,
        key: `cred_place:${cred}`,
        evidence: `cred ${cred} of ${names}: cannot tell where it lives (${place.why})`,
      });
      continue;
    }
    findings.push({
      check: CREDENTIALS,
      kind: 'tampering',
      severity: 'high',
      address: cred,
      symbol: null,
      key: `cred_place:${cred}`,
      evidence: `cred ${cred} of ${names}${users.length > 4 ? ` and ${users.length - 4} more` : ''} is ${place.kind === 'outside' ? `outside the direct map (${place.region})` : `in slab cache '${place.cache}', not cred_jar`}: creds come from cred_jar or are init_cred`,
    });
  }
  return { findings, state };
}

// ---------------------------------------------------------------------------- reading

const TASK_FIELDS = [
  'real_cred',
  'cred',
  'real_cred.uid',
  'real_cred.euid',
  'real_cred.suid',
  'real_cred.cap_effective',
  'real_cred.user.uid',
  'self_exec_id?',
  'real_parent.pid',
  'real_parent.comm',
  'real_parent.start_time',
  'real_parent.real_cred.uid',
  'real_parent.real_cred.euid',
  'real_parent.signal.flags',
  'real_parent.signal.is_child_subreaper?',
  'mm.exe_file.f_inode.i_mode',
  'mm.exe_file.f_inode.i_uid',
];

function capBit(bytes: Uint8Array, bit: number): boolean {
  return bit >> 3 < bytes.length && ((bytes[bit >> 3] >> (bit & 7)) & 1) === 1;
}

function credTask(t: StructView): CredTask | string {
  const T = t.layout;
  if (!t.reached('real_cred.uid')) return `real_cred unreadable: ${t.derefError('real_cred.uid')?.message}`;
  const flags = t.num('flags');
  const start = BigInt(t.int('start_time'));
  let parent: CredTask['parent'] = null;
  if (t.reached('real_parent.real_cred.uid') && t.ptr('real_parent') !== t.va) {
    const sigFlags = t.reached('real_parent.signal.flags') ? t.num('real_parent.signal.flags') : 0;
    const sub =
      T.has('real_parent.signal.is_child_subreaper') && t.reached('real_parent.signal.is_child_subreaper')
        ? t.num('real_parent.signal.is_child_subreaper') !== 0
        : false;
    parent = {
      pid: t.num('real_parent.pid'),
      comm: t.str('real_parent.comm'),
      uid: t.u32('real_parent.real_cred.uid'),
      euid: t.u32('real_parent.real_cred.euid'),
      reaper: (sigFlags & SIGNAL_UNKILLABLE) !== 0 || sub,
      younger: BigInt(t.int('real_parent.start_time')) > start,
    };
  }
  let exe: boolean | null = null;
  if (t.reached('mm.exe_file.f_inode.i_mode'))
    exe = (t.num('mm.exe_file.f_inode.i_mode') & S_ISUID) !== 0 && t.u32('mm.exe_file.f_inode.i_uid') === 0;
  return {
    pid: t.num('pid'),
    tgid: t.num('tgid'),
    comm: t.str('comm'),
    task: vaHex(t.va),
    start: start.toString(),
    kthread: (flags & PF_KTHREAD) !== 0,
    exiting: t.num('exit_state') !== 0 || (flags & PF_EXITING) !== 0,
    realCred: vaHex(t.ptr('real_cred')),
    cred: vaHex(t.ptr('cred')),
    uid: t.u32('real_cred.uid'),
    euid: t.u32('real_cred.euid'),
    suid: t.u32('real_cred.suid'),
    userUid: t.reached('real_cred.user.uid') ? t.u32('real_cred.user.uid') : null,
    capSetuid: capBit(t.bytes('real_cred.cap_effective'), CAP_SETUID),
    execId: T.has('self_exec_id') ? String(t.int('self_exec_id')) : null,
    parent,
    exeSetuidRoot: exe,
  };
}

/** x86-64 module space and the top of the kernel map (for naming where a stray pointer points). */
const MODULES_LOW = 0xffffffffa0000000n;

/**
 * The head `struct page` of a page from its compound word: `page->compound_head` (a tail's word is
 * the head's address + 1) or, where BTF has `compound_info` instead, the same or — with
 * HUGETLB_PAGE_OPTIMIZE_VMEMMAP and a power-of-2 struct page — a mask with bit 0 set that turns the
 * tail's address into the head's. Bit 0 clear: the page is a head (or single) page. Which encoding
 * a word uses is told by the result: a pointer must lie at or below the page, whole struct pages
 * away, within the largest folio (2^18 pages); else the mask is applied. -1n when neither fits.
 */
export function compoundHead(page: bigint, word: bigint, pageStructSize: bigint): bigint {
  if ((word & 1n) === 0n) return page;
  const span = pageStructSize << 18n;
  const ptr = word - 1n;
  if (ptr <= page && page - ptr < span && (page - ptr) % pageStructSize === 0n) return ptr;
  // a mask is all ones above some bit n > 1 and zeros below it (bit 0 aside): 2^64 − 2^n, + 1
  const low = BigInt.asUintN(64, ~(word - 1n)); // 2^n − 1
  if ((low & (low + 1n)) !== 0n || low + 1n < pageStructSize * 2n || low + 1n > span) return -1n;
  return page & word;
}

/** Where each cred lives: init_cred, the direct map's slab pages (which cache), or elsewhere. */
async function credPlaces(
  ctx: CheckContext,
  creds: readonly bigint[],
  warnings: string[],
): Promise<{ places: Map<string, CredPlace>; partial: boolean }> {
  const k = ctx.k;
  const out = new Map<string, CredPlace>();
  const initCred = k.symbol('init_cred');
  const text = k.symbols.get('_text')?.address ?? 0n;
  const end = k.symbols.get('_end')?.address ?? 0n;
  let pob: bigint;
  let vmemmap: bigint;
  let maxPfn: bigint;
  let P: Layout;
  let S: Layout;
  let compound: string;
  try {
    pob = ctx.d.facts.pageOffsetBase ?? BigInt(await k.globalValue('page_offset_base'));
    vmemmap = ctx.d.facts.vmemmapBase ?? BigInt(await k.globalValue('vmemmap_base'));
    maxPfn = BigInt(await k.globalValue('max_pfn'));
    compound = k.hasField('page', 'compound_head') ? 'compound_head' : 'compound_info';
    P = k.layout('page', [compound]);
    S =
      k.hasType('slab') && k.hasField('slab', 'slab_cache')
        ? k.layout('slab', ['slab_cache', 'slab_cache.name'])
        : k.layout('page', ['slab_cache', 'slab_cache.name']);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    // placement cannot be judged on this kernel: say so once (the other rules still run)
    warnings.push(`cred placement not checked: ${e.message}`);
    for (const c of creds) if (c === initCred) out.set(vaHex(c), { kind: 'init_cred' });
    return { places: out, partial: true };
  }
  const dmEnd = pob + maxPfn * 4096n;
  const inDirectMap: bigint[] = [];
  for (const c of creds) {
    if (c === initCred) out.set(vaHex(c), { kind: 'init_cred' });
    else if (c >= pob && c < dmEnd) inDirectMap.push(c);
    else {
      const region =
        c >= text && c < end
          ? 'in the kernel image'
          : c >= MODULES_LOW
            ? 'in module space'
            : ctx.d.facts.vmallocBase !== undefined && c >= ctx.d.facts.vmallocBase && c < vmemmap
              ? 'in vmalloc space'
              : 'not in the direct map';
      out.set(vaHex(c), { kind: 'outside', region });
    }
  }
  if (inDirectMap.length === 0) return { places: out, partial: false };
  // cred → struct page (vmemmap) → compound head → slab_cache
  const pageSize = BigInt(k.btf.sizeOf('page'));
  const pages = inDirectMap.map((c) => vmemmap + ((c - pob) >> 12n) * pageSize);
  const pv = await k.readStructs(pages, P);
  const heads: bigint[] = pv.map((v, i) =>
    v instanceof PmiError ? -1n : compoundHead(pages[i], v.ptr(compound), pageSize),
  );
  const okHeads = [...new Set(heads.filter((h) => h >= 0n))];
  const sv = await k.readStructs(okHeads, S);
  const cacheOf = new Map<bigint, StructView | PmiError>(okHeads.map((h, i) => [h, sv[i]]));
  let credJar: bigint | undefined;
  try {
    credJar = await k.readPointer(k.symbol('cred_jar'));
  } catch {
    credJar = undefined; // no symbol: compare by name (KMEM_CACHE(cred) names it 'cred', older kernels 'cred_jar')
  }
  const names = new Map<bigint, string>();
  for (const [i, c] of inDirectMap.entries()) {
    const h = heads[i];
    const p = pv[i];
    if (p instanceof PmiError) {
      out.set(vaHex(c), { kind: 'unknown', why: `its struct page does not read: ${p.message}` });
      continue;
    }
    if (h < 0n) {
      out.set(vaHex(c), { kind: 'unknown', why: `its struct page's ${compound} names no head page` });
      continue;
    }
    const s = cacheOf.get(h)!;
    if (s instanceof PmiError) {
      out.set(vaHex(c), { kind: 'unknown', why: `its slab does not read: ${s.message}` });
      continue;
    }
    const cache = s.ptr('slab_cache');
    if (credJar !== undefined && cache === credJar) {
      out.set(vaHex(c), { kind: 'cred_jar' });
      continue;
    }
    let name = names.get(cache);
    if (name === undefined) {
      try {
        const np = s.reached('slab_cache.name') ? s.ptr('slab_cache.name') : 0n;
        name = np === 0n ? '' : await k.readString(np, 64);
        if (!/^[\x20-\x7e]+$/.test(name)) name = '';
      } catch {
        name = '';
      }
      names.set(cache, name);
    }
    if (credJar === undefined && (name === 'cred_jar' || name === 'cred')) out.set(vaHex(c), { kind: 'cred_jar' });
    else
      out.set(vaHex(c), {
        kind: 'other_cache',
        cache: name || `not a slab page (slab_cache field ${vaHex(cache)})`,
      });
  }
  return { places: out, partial: false };
}

/** Every task's credentials (the task list, threads, init_task). */
async function readCredTasks(ctx: CheckContext): Promise<{ tasks: CredTask[]; warnings: string[]; partial: boolean }> {
  const k = ctx.k;
  const r = { tasks: [] as CredTask[], warnings: [] as string[], partial: false };
  const add = (v: StructView) => {
    const t = credTask(v);
    if (typeof t === 'string') {
      r.warnings.push(`pid ${v.num('pid')} task ${vaHex(v.va)}: ${t}`);
      r.partial = true;
    } else r.tasks.push(t);
  };
  try {
    add(await k.read(k.symbol('init_task'), taskLayout(k, TASK_FIELDS)));
    for await (const chunk of walkTasks(k, {
      threads: true,
      signal: ctx.signal,
      fields: TASK_FIELDS,
      onThreadListError: (e, leader) => {
        r.warnings.push(`thread list of pid ${leader.num('pid')} cut short: ${e.message}`);
        r.partial = true;
      },
    }))
      for (const v of chunk) add(v);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    r.warnings.push(`task list cut short: ${e.message}`);
    r.partial = true;
  }
  return r;
}

/** One read of every task's credentials and where the creds live, judged. */
async function pass(
  ctx: CheckContext,
  before: CredentialsState | undefined,
): Promise<{ findings: Finding[]; state: CredentialsState; warnings: string[]; partial: boolean }> {
  const k = ctx.k;
  // a list caught mid-update on a live target reads whole a moment later (see processes.ts)
  const { tasks, warnings, partial } = await settled(() => readCredTasks(ctx));
  const creds = [...new Set(tasks.flatMap((t) => [BigInt(t.realCred), BigInt(t.cred)]))];
  const placed = await credPlaces(ctx, creds, warnings);
  const { findings, state } = judgeCredentials(tasks, placed.places, vaHex(k.symbol('init_cred')), before);
  return { findings, state, warnings, partial: partial || placed.partial };
}

/**
 * A pass, and when it finds tampering a second pass: a tampering finding counts only when the
 * second read finds it again (same key: the same task by pid and start time, the same cred) — a
 * task_struct or cred read while the kernel was creating or freeing it says nothing.
 */
async function run(ctx: CheckContext, baseline: unknown): Promise<CheckOutcome> {
  const t0 = performance.now();
  const before = isCredState(baseline) ? baseline : undefined;
  const first = await pass(ctx, before);
  let findings = first.findings;
  const warnings = [...first.warnings];
  let partial = first.partial;
  if (findings.some((f) => f.kind === 'tampering')) {
    const second = await pass(ctx, before);
    for (const w of second.warnings) if (!warnings.includes(w)) warnings.push(w);
    partial ||= second.partial;
    const again = new Set(second.findings.filter((f) => f.kind === 'tampering').map((f) => f.key));
    findings = findings.filter((f) => f.kind !== 'tampering' || again.has(f.key));
  }
  return {
    check: CREDENTIALS,
    findings,
    warnings,
    partial,
    ms: Math.round((performance.now() - t0) * 10) / 10,
    state: first.state,
  };
}

function isCredState(x: unknown): x is CredentialsState {
  return typeof x === 'object' && x !== null && typeof (x as CredentialsState).nonroot === 'object';
}

/** credentials as a Check (see the file comment). */
export const credentialsCheck: Check = {
  id: CREDENTIALS,
  title: 'Credentials: root without a parent or setuid exec to explain it, shared or misplaced cred objects',
  light: false,
  run: (ctx, baseline) => run(ctx, baseline),
};
