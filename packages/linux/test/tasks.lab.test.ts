/**
 * Processes from memory vs the guest's own view: `ps` truth (recorded inside the guest before the
 * snapshot), /proc/PID/maps and /proc/PID/environ (collected right before a fresh snapshot), over
 * raw: and nettlp://; and a snapshot copy with a corrupted task list (cycle, unmapped link).
 */
import { execFile } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openSource, type PhysicalMemory } from '@pmi/core';
import '@pmi/sources';
import { discoverKernel, KernelObjects, type DiscoveredKernel, type DiscoveryHints } from '@pmi/kernel';
import { startAdapter } from '@pmi/nettlp';
import { openLabVm, WORKLOAD, type GroundTruth, type ThreadListing } from '@pmi/lab';
import { openLabKernel, procMapsLine } from './lab-kernel.js';
import {
  findTask,
  listMaps,
  listTasks,
  processEnv,
  readProcessMemory,
  taskLayout,
  type TaskRow,
} from '../src/index.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-tasks-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const CLI = join(import.meta.dirname, '../../cli/bin/pmi.js');

async function discover(
  uri: string,
  hints?: DiscoveryHints,
): Promise<{ mem: PhysicalMemory; d: DiscoveredKernel; k: KernelObjects }> {
  const mem = await openSource(uri);
  const d = await discoverKernel(mem, { hints });
  return { mem, d, k: KernelObjects.from(d) };
}

/** A kworker's /proc name: its id, then `-desc`/`+desc` (the workqueue of its last/current work item). */
function kworkerParts(name: string): { id: string; desc: string } | undefined {
  const m = /^(kworker\/(?:R-.*|[^-+]*))(?:([-+])(.*))?$/.exec(name);
  if (!m || name.startsWith('kworker/R-')) return name.startsWith('kworker/') ? { id: name, desc: '' } : undefined;
  return { id: m[1], desc: m[3] ?? '' };
}

/**
 * Names as /proc shows them are compared exactly; a kworker's workqueue changes with each work item,
 * so one that ran another item between the listing and the snapshot matches when its id is the
 * same and its workqueue is one the kernel has (`wqNames`).
 */
function commMatches(mine: string, truth: string, wqNames?: ReadonlySet<string>): 'exact' | 'kworker' | false {
  if (mine === truth) return 'exact';
  const a = kworkerParts(mine);
  const b = kworkerParts(truth);
  if (!a || !b || a.id !== b.id) return false;
  return a.desc === '' || !wqNames || wqNames.has(a.desc) ? 'kworker' : false;
}

/** Names of every workqueue (the kernel's `workqueues` list), to tell a real workqueue name from garbage. */
async function workqueueNames(k: KernelObjects): Promise<Set<string>> {
  const W = k.layout('workqueue_struct', ['list', 'name']);
  const r = await k.collectList(k.symbol('workqueues'), W, 'list', { max: 10_000, name: 'workqueues' });
  expect(r.error).toBeUndefined();
  return new Set(r.items.map((w) => w.str('name')));
}

/**
 * Up to `rounds` times: list the comm of `tids` in the guest, snapshot, list again, and compare pmi's
 * names on the snapshot with the threads whose name did not change across the two listings. Returns
 * the tids never confirmed (a thread that exited counts as confirmed: there is nothing to compare).
 */
async function confirmKworkers(
  target: { name: string; snapshot_path: string; id: string },
  tids: readonly number[],
  rounds = 6,
): Promise<string[]> {
  let left = [...tids];
  const last = new Map<number, string>();
  if (left.length === 0) return [];
  const vm = await openLabVm(target.name);
  const list = async (): Promise<Map<number, string>> => {
    const out = await vm.run(
      left.map((t) => `c=$(cat /proc/${t}/comm 2>/dev/null) && echo "${t} $c"`).join('\n') + '\ntrue',
    );
    return new Map(
      out.stdout
        .split('\n')
        .filter((l) => /^\d+ /.test(l))
        .map((l) => [Number(l.slice(0, l.indexOf(' '))), l.slice(l.indexOf(' ') + 1)] as const),
    );
  };
  for (let round = 0; round < rounds && left.length > 0; round++) {
    const path = join(scratch, `${target.name}.kworkers.ram`);
    try {
      const before = await list();
      await vm.snapshot(path);
      const after = await list();
      const fresh = await openLabKernel('raw:' + path, target);
      try {
        const rows = (await listTasks(fresh.k, { threads: true, cmdline: false })).rows;
        const name = new Map(rows.map((r) => [r.pid, r.comm]));
        left = left.filter((t) => {
          const b = before.get(t);
          if (b === undefined || after.get(t) === undefined) return false; // exited
          if (b !== after.get(t)) return true; // busy right now: try again
          last.set(t, `${b} (pmi: ${name.get(t) ?? 'missing'})`);
          return name.get(t) !== b;
        });
      } finally {
        await fresh.mem.close();
      }
    } finally {
      rmSync(path, { force: true });
      rmSync(path + '.vcpus.json', { force: true });
    }
  }
  process.stderr.write(
    `[tasks] ${target.id}: ${tids.length} kworker(s) re-checked on quiet snapshots, ${left.length} never matched\n`,
  );
  return left.map((t) => `${t}: ${last.get(t) ?? 'its name changed in every round'}`);
}

describe.each(targets.map((t) => [t.id, t] as const))('processes, lab target %s', (_id, target) => {
  let truth: GroundTruth;
  let snap: Awaited<ReturnType<typeof discover>>;
  let rawRows: TaskRow[];

  beforeAll(async () => {
    truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
    snap = await discover('raw:' + target.snapshot_path);
  });
  afterAll(async () => {
    await snap?.mem.close();
  });

  it('ps: (pid, ppid, uid, gid, comm) and user cmdlines equal the guest ps truth', async () => {
    const t0 = performance.now();
    const r = await listTasks(snap.d);
    const ms = performance.now() - t0;
    expect(r.partial).toBe(false);
    expect(r.warnings).toEqual([]);
    rawRows = r.rows;
    // Children of the workload loops (sleep) and of the command loop come and go between truth and snapshot.
    const loops = new Set(
      truth.ps.filter((p) => p.comm.startsWith('pmi-') || p.comm === 'cmdloop.sh').map((p) => p.pid),
    );
    const churn = (x: { comm: string; ppid: number; pid: number }) =>
      loops.has(x.ppid) || x.pid === truth.collector_pid || x.ppid === truth.collector_pid;
    const mine = r.rows.filter((x) => !churn(x));
    const theirs = truth.ps.filter((p) => !churn(p));
    const inMem = new Map(mine.map((x) => [x.pid, x]));
    const inTruth = new Map(theirs.map((p) => [p.pid, p]));
    const onlyTruth = theirs.filter((p) => !inMem.has(p.pid)).map((p) => `${p.pid}:${p.comm}`);
    const onlyMem = mine.filter((x) => !inTruth.has(x.pid)).map((x) => `${x.pid}:${x.comm}`);
    process.stderr.write(
      `[tasks] ${target.id}: ${r.rows.length} processes in ${ms.toFixed(0)} ms (truth ${truth.ps.length}); ` +
        `born/ended in between: only in truth [${onlyTruth.join(' ')}], only in memory [${onlyMem.join(' ')}]\n`,
    );
    // the kernel may start/stop a few kworkers in between; nothing else
    expect(onlyTruth.filter((s) => !s.includes(':kworker'))).toEqual([]);
    expect(onlyMem.filter((s) => !s.includes(':kworker'))).toEqual([]);
    const bad: string[] = [];
    for (const p of theirs) {
      const m = inMem.get(p.pid);
      if (!m) continue;
      const ok =
        m.ppid === p.ppid &&
        m.uid === p.uid &&
        m.gid === p.gid &&
        m.kthread === p.kernel_thread &&
        commMatches(m.comm, p.comm) !== false &&
        (p.kernel_thread ? m.cmdline === '' : m.cmdline === p.args) &&
        'RSDTtXZPI'.includes(m.state) &&
        m.state.length === 1;
      if (!ok) bad.push(`truth ${JSON.stringify(p)}\n  memory ${JSON.stringify(m)}`);
    }
    expect(bad).toEqual([]);
    // the workload: exact
    for (const w of [WORKLOAD.sleeper, WORKLOAD.userSleeper]) {
      const t = truth.ps.filter((p) => p.comm === w.comm);
      const m = r.rows.filter((x) => x.comm === w.comm);
      expect(t.length).toBe(1);
      expect(m.map((x) => [x.pid, x.ppid, x.uid, x.state, x.threads])).toEqual(
        t.map((p) => [p.pid, p.ppid, w.uid, 'S', 1]),
      );
      expect(m[0].cmdline).toContain(w.args);
    }
    expect(r.rows.filter((x) => x.comm === WORKLOAD.holder.comm).map((x) => x.pid)).toEqual(
      truth.ps.filter((p) => p.comm === WORKLOAD.holder.comm).map((p) => p.pid),
    );
    // start times: increasing with pid for the workload (started in order), boot time plausible
    expect(r.bootTime).toBeDefined();
    const startYear = new Date(Number(r.bootTime!.epochNs / 1_000_000n)).getUTCFullYear();
    expect(startYear).toBeGreaterThanOrEqual(2020);
    expect(r.rows.every((x) => x.start_time >= 0 && x.start_time < 86400)).toBe(true);
  });

  it("ps --threads (the CLI): every thread — tid, tgid, comm as /proc shows it — equals the guest's /proc", async () => {
    const after = (JSON.parse(readFileSync(target.threads_after_path, 'utf8')) as ThreadListing).threads;
    const run = await promisify(execFile)(
      process.execPath,
      [CLI, '--source', 'raw:' + target.snapshot_path, '--json', 'ps', '--threads'],
      { timeout: 120_000, maxBuffer: 64 << 20 },
    );
    const doc = JSON.parse(run.stdout) as {
      rows: (TaskRow & { tgid: number })[];
      warnings: string[];
    };
    expect(doc.warnings).toEqual([]);
    const wq = await workqueueNames(snap.k);
    // processes that come and go: children of the workload loops and of the command loop, the collector's
    const loops = new Set(
      truth.ps.filter((p) => p.comm.startsWith('pmi-') || p.comm === 'cmdloop.sh').map((p) => p.pid),
    );
    const ppidOf = new Map(truth.ps.map((p) => [p.pid, p.ppid]));
    const churn = (pid: number, ppid: number | undefined) =>
      ppid === undefined || loops.has(ppid) || pid === truth.collector_pid || ppid === truth.collector_pid;
    const mine = doc.rows.filter((x) => !churn(x.tgid, x.ppid));
    const theirs = truth.threads.filter((x) => !churn(x.pid, ppidOf.get(x.pid)));
    const afterBy = new Map(after.map((x) => [x.tid, x]));
    const mineBy = new Map(mine.map((x) => [x.pid, x]));
    const theirBy = new Map(theirs.map((x) => [x.tid, x]));
    const problems: string[] = [];
    const fuzzy: string[] = [];
    const fuzzyTids: number[] = [];
    let kworkersExact = 0;
    for (const x of theirs) {
      const m = mineBy.get(x.tid);
      if (!m) {
        // a kworker that exited between the listing and the snapshot is gone from the after listing too
        if (!(x.comm.startsWith('kworker/') && !afterBy.has(x.tid))) problems.push(`missing ${JSON.stringify(x)}`);
        continue;
      }
      const a = afterBy.get(x.tid);
      const how =
        commMatches(m.comm, x.comm) || (a ? commMatches(m.comm, a.comm, wq) : false) || commMatches(m.comm, x.comm, wq);
      if (m.tgid !== x.pid || !how)
        problems.push(`truth ${JSON.stringify(x)} after ${a?.comm} | pmi tgid ${m.tgid} '${m.comm}'`);
      if (how === 'kworker') {
        fuzzy.push(`${x.tid}: ${x.comm} / ${a?.comm ?? '-'} → ${m.comm}`);
        fuzzyTids.push(x.tid);
      }
      if (how === 'exact' && kworkerParts(m.comm)?.desc) kworkersExact++;
      // the raw name is the kernel's task->comm, the start of what /proc shows
      if (!m.comm.startsWith(m.task_comm) && m.comm !== 'kworker/dying')
        problems.push(`task_comm '${m.task_comm}' vs '${m.comm}'`);
      if (!m.kthread && m.comm !== m.task_comm) problems.push(`user thread ${m.pid}: '${m.comm}' vs '${m.task_comm}'`);
    }
    for (const m of mine) {
      if (theirBy.has(m.pid)) continue;
      const a = afterBy.get(m.pid);
      // born between the listing and the snapshot: a kworker the after listing shows
      if (!(a && m.comm.startsWith('kworker/') && a.pid === m.tgid)) problems.push(`extra tid ${m.pid} '${m.comm}'`);
    }
    process.stderr.write(
      `[tasks] ${target.id}: ps --threads ${doc.rows.length} threads (truth ${truth.threads.length}, after ${after.length}); ` +
        `kworkers named exactly ${kworkersExact}, after another work item ${fuzzy.length}${fuzzy.length ? ` [${fuzzy.join('; ')}]` : ''}\n`,
    );
    expect(problems).toEqual([]);
    // a kworker that ran another work item around the snapshot is confirmed exactly on fresh snapshots
    // taken between two quick listings of just those threads (its name stable across both)
    const unconfirmed = await confirmKworkers(target, fuzzyTids);
    expect(unconfirmed, 'kworkers whose name never matched /proc on a quiet snapshot').toEqual([]);
    // the threaded workload: exactly its four threads, named
    const wl = truth.threads.filter((x) => x.pid === truth.threads.find((y) => y.comm === WORKLOAD.threads.comm)?.pid);
    expect(wl.map((x) => x.comm).sort()).toEqual([WORKLOAD.threads.comm, ...WORKLOAD.threads.threadNames].sort());
    const mwl = doc.rows.filter((x) => x.tgid === wl[0].pid);
    expect(mwl.map((x) => [x.pid, x.tgid, x.comm])).toEqual(wl.map((x) => [x.tid, x.pid, x.comm]));
    expect(mwl[0].pid).toBe(wl[0].pid); // the leader first
    expect(doc.rows.find((x) => x.pid === wl[0].pid)?.threads).toBe(4);
    // the library gives the same threads
    const lib = await listTasks(snap.d, { threads: true, cmdline: false });
    expect(lib.rows.map((x) => [x.pid, x.tgid, x.comm])).toEqual(doc.rows.map((x) => [x.pid, x.tgid, x.comm]));
  });

  it('ps over nettlp:// (adapter serving the snapshot) equals ps over raw:', async () => {
    const source = await openSource('raw:' + target.snapshot_path);
    const portBase = 20000 + Math.floor(Math.random() * 400) * 64;
    const adapter = await startAdapter({ source, listen: '127.0.0.2', portBase, tags: 32 });
    try {
      const size = statSync(target.snapshot_path).size;
      // Validated hints from the snapshot's discovery: the cold nettlp scan is covered by discovery.lab.
      const n = await discover(`nettlp://127.0.0.2:${portBase}?tags=32&mrrs=4096&ranges=0+${size}`, snap.d.facts.hints);
      try {
        const t0 = performance.now();
        const r = await listTasks(n.d);
        process.stderr.write(`[tasks] ${target.id}: ps over nettlp:// ${(performance.now() - t0).toFixed(0)} ms\n`);
        expect(r.partial).toBe(false);
        expect(r.rows).toEqual(rawRows ?? (await listTasks(snap.d)).rows);
      } finally {
        await n.mem.close();
      }
    } finally {
      await adapter.close();
      await source.close();
    }
  });

  it("maps, env and read --pid of pmi-sleeper's shell equal the guest's /proc", async () => {
    const pid = truth.ps.find((p) => p.comm === WORKLOAD.sleeper.comm)!.pid;
    const vm = await openLabVm(target.name);
    const out = await vm.run(`cat /proc/${pid}/maps; echo @@ENV; tr '\\0' '\\n' < /proc/${pid}/environ`);
    const path = join(scratch, `${target.name}.maps.ram`);
    await vm.snapshot(path);
    const [mapsText, envText] = out.stdout.split('@@ENV\n');
    const fresh = await discover('raw:' + path);
    try {
      const t = await findTask(fresh.k, pid);
      const m = await listMaps(fresh.k, t.ptr('mm'));
      expect(m.partial).toBe(false);
      const mine = m.rows.map(procMapsLine);
      const theirs = mapsText
        .trim()
        .split('\n')
        .map((l) => {
          const f = l.trim().split(/\s+/);
          const [range, perms, off, dev, ino] = f;
          const [a, b] = range.split('-').map((x) => BigInt('0x' + x).toString(16));
          return [`${a}-${b}`, perms, off, dev, ino, f.slice(5).join(' ')].join(' ');
        });
      expect(mine).toEqual(theirs);
      expect(m.rows.filter((r) => r.path === '/bin/busybox').length).toBeGreaterThanOrEqual(2);
      const env = await processEnv(fresh.k, pid);
      expect(env.strings).toEqual(envText.trim().split('\n'));
      expect(env.strings).toEqual(expect.arrayContaining(['HOME=/', 'TERM=linux']));
      const first = m.rows.find((r) => r.path === '/bin/busybox')!;
      const bytes = await readProcessMemory(fresh.k, pid, BigInt(first.start), 4);
      expect(Buffer.from(bytes).toString('latin1')).toBe('\x7fELF');
    } finally {
      await fresh.mem.close();
      rmSync(path, { force: true });
    }
  });

  it('a corrupted task list (cycle, link into unmapped memory): partial rows, a warning, exit 3, no hang', async () => {
    const T = taskLayout(snap.k);
    const full = rawRows ?? (await listTasks(snap.d, { cmdline: false })).rows;
    expect(full.length).toBeGreaterThan(20);
    const nextOff = BigInt(T.offsetOf('tasks') + snap.k.btf.fieldOffset('list_head', 'next'));
    const victim = BigInt(full[15].task); // its tasks.next is rewritten
    const victimNextPa = await snap.k.paging.translate(victim + nextOff);
    const corrupt = async (value: bigint, name: string) => {
      const copy = join(scratch, `${target.name}.${name}`);
      copyFileSync(target.snapshot_path, copy);
      const fd = openSync(copy, 'r+');
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt.asUintN(64, value));
      writeSync(fd, b, 0, 8, victimNextPa);
      closeSync(fd);
      return copy;
    };
    const earlier = BigInt(full[5].task) + BigInt(T.offsetOf('tasks'));
    const pageOffset = BigInt(await snap.k.globalValue('page_offset_base'));
    for (const [name, value, reason] of [
      ['cycle', earlier, 'cycle'],
      ['unmapped', pageOffset + (1n << 44n), 'unreadable'],
    ] as const) {
      const copy = await corrupt(value, name);
      try {
        const c = await discover('raw:' + copy);
        try {
          // link by link (the default on local sources) and through the pid-IDR prefetch (remote default)
          for (const prefetch of [false, true]) {
            const t0 = performance.now();
            const r = await listTasks(c.d, { prefetch });
            expect(performance.now() - t0).toBeLessThan(30_000);
            expect(r.partial).toBe(true);
            expect(r.error?.code).toBe('E_LIST');
            expect((r.error?.data as { reason?: string }).reason).toBe(reason);
            expect(r.rows.map((x) => x.pid)).toEqual(full.slice(0, 16).map((x) => x.pid));
            expect(r.warnings.length).toBeGreaterThan(0);
          }
        } finally {
          await c.mem.close();
        }
        const run = await promisify(execFile)(process.execPath, [CLI, '--source', 'raw:' + copy, '--json', 'ps'], {
          timeout: 120_000,
        }).then(
          (o) => ({ code: 0, stdout: o.stdout }),
          (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
        );
        expect(run.code).toBe(3);
        const doc = JSON.parse(run.stdout) as { rows: { pid: number }[]; warnings: string[] };
        expect(doc.rows.length).toBe(16);
        expect(doc.warnings.join(' ')).toContain(reason);
      } finally {
        rmSync(copy, { force: true });
      }
    }
  });
});
