/**
 * Path of a `struct path` {mnt, dentry}: a bounded walk up `d_parent`, crossing mounts through
 * `mount->mnt_mountpoint` / `mnt_parent` (the `struct mount` embedding the vfsmount), like the
 * kernel's d_path() relative to the root of the mount tree.
 *
 * Batched: `dentryPaths(k, paths)` advances every path one component per round — one readStructs
 * for the dentries of the round, one for the names (and one for new mounts) — so N paths of depth
 * d cost about 2·d batches, not N·d.
 *
 * Limits: at most `maxDepth` (default 256) components and `maxMounts` (64) mount crossings per path;
 * beyond, or on an unreadable dentry, the result carries `error` and the components read so far.
 * A dentry that is unhashed (not root, `d_hash.pprev` NULL) gets " (deleted)" as in /proc.
 * Pseudo files whose name comes from `d_op->d_dname` (pipe:[…], socket:[…]) are not rendered
 * here: the walk stops at their pseudo-filesystem root and returns "/name".
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';

export interface VfsPathRef {
  /** struct vfsmount * */
  mnt: bigint;
  /** struct dentry * */
  dentry: bigint;
}

export interface DentryPathResult {
  path: string;
  deleted: boolean;
  error?: PmiError;
}

export interface DentryPathOptions {
  maxDepth?: number;
  maxMounts?: number;
}

interface Walk {
  mount: bigint;
  dentry: bigint;
  parts: string[];
  mounts: number;
  done: boolean;
  deleted: boolean;
  first: boolean;
  error?: PmiError;
}

function layouts(k: KernelObjects): { D: Layout; M: Layout } {
  const D = k.layout('dentry', ['d_parent', 'd_name.len', 'd_name.name', 'd_hash.pprev']);
  const M = k.layout('mount', ['mnt', 'mnt.mnt_root', 'mnt_parent', 'mnt_mountpoint']);
  return { D, M };
}

/** The paths of many `struct path`s, batched by depth. */
export async function dentryPaths(
  k: KernelObjects,
  refs: readonly VfsPathRef[],
  opts: DentryPathOptions = {},
): Promise<DentryPathResult[]> {
  const maxDepth = opts.maxDepth ?? 256;
  const maxMounts = opts.maxMounts ?? 64;
  const { D, M } = layouts(k);
  const mntOff = BigInt(M.offsetOf('mnt'));
  const mounts = new Map<bigint, StructView | PmiError>();
  const walks: Walk[] = refs.map((r) => ({
    mount: r.mnt - mntOff,
    dentry: r.dentry,
    parts: [],
    mounts: 0,
    done: r.dentry === 0n || r.mnt === 0n,
    deleted: false,
    first: true,
    error:
      r.dentry === 0n || r.mnt === 0n
        ? new PmiError('E_USAGE', 'linux/dentry', 'NULL path', { ...hexRef(r) })
        : undefined,
  }));
  const fail = (w: Walk, e: PmiError) => {
    w.error = e;
    w.done = true;
  };
  for (let round = 0; round < maxDepth + maxMounts + 2; round++) {
    const active = walks.filter((w) => !w.done);
    if (active.length === 0) break;
    // mounts not seen yet
    const newMounts = [...new Set(active.map((w) => w.mount))].filter((m) => !mounts.has(m));
    if (newMounts.length) {
      const ms = await k.readStructs(newMounts, M);
      newMounts.forEach((m, i) => mounts.set(m, ms[i]));
    }
    const ds = [...new Set(active.map((w) => w.dentry))];
    const dv = await k.readStructs(ds, D);
    const dmap = new Map<bigint, StructView | PmiError>(ds.map((d, i) => [d, dv[i]]));
    const nameOps: { w: Walk; va: bigint; buf: Uint8Array }[] = [];
    for (const w of active) {
      const m = mounts.get(w.mount)!;
      const d = dmap.get(w.dentry)!;
      if (m instanceof PmiError) {
        fail(w, m);
        continue;
      }
      if (d instanceof PmiError) {
        fail(w, d);
        continue;
      }
      const parent = d.ptr('d_parent');
      const isRoot = parent === w.dentry;
      if (w.first) {
        w.first = false;
        if (!isRoot && d.isNull('d_hash.pprev')) w.deleted = true;
      }
      if (isRoot && w.dentry !== m.ptr('mnt.mnt_root')) {
        // a disconnected or pseudo dentry (pipes, sockets, anon inodes): its own name only
        const len = Math.min(d.num('d_name.len'), 255);
        nameOps.push({ w, va: d.ptr('d_name.name'), buf: new Uint8Array(len) });
        w.done = true;
        continue;
      }
      if (w.dentry === m.ptr('mnt.mnt_root')) {
        const up = m.ptr('mnt_parent');
        if (up === w.mount || up === 0n) {
          w.done = true; // the root of the mount tree
          continue;
        }
        if (++w.mounts > maxMounts) {
          fail(w, tooDeep(w, 'mounts', maxMounts));
          continue;
        }
        w.dentry = m.ptr('mnt_mountpoint');
        w.mount = up;
        continue;
      }
      if (w.parts.length >= maxDepth) {
        fail(w, tooDeep(w, 'components', maxDepth));
        continue;
      }
      const len = Math.min(d.num('d_name.len'), 255);
      nameOps.push({ w, va: d.ptr('d_name.name'), buf: new Uint8Array(len) });
      w.dentry = parent;
    }
    if (nameOps.length) {
      const failures = await k.paging.readVirtualBatch(nameOps);
      const bad = new Set(failures.map((f) => f.index));
      nameOps.forEach((op, i) => {
        if (bad.has(i)) op.w.parts.push('?');
        else op.w.parts.push(Buffer.from(op.buf).toString('utf8'));
      });
    }
  }
  for (const w of walks) if (!w.done) fail(w, tooDeep(w, 'rounds', maxDepth + maxMounts));
  return walks.map((w) => ({
    path: '/' + w.parts.reverse().join('/') + (w.deleted ? ' (deleted)' : ''),
    deleted: w.deleted,
    ...(w.error ? { error: w.error } : {}),
  }));
}

/** The path of one `struct path` (see dentryPaths). */
export async function dentryPath(
  k: KernelObjects,
  ref: VfsPathRef,
  opts: DentryPathOptions = {},
): Promise<DentryPathResult> {
  return (await dentryPaths(k, [ref], opts))[0];
}

function hexRef(r: VfsPathRef): { mnt: string; dentry: string } {
  return { mnt: '0x' + r.mnt.toString(16), dentry: '0x' + r.dentry.toString(16) };
}

function tooDeep(w: Walk, what: string, limit: number): PmiError {
  return new PmiError('E_LIST', 'linux/dentry', `path walk exceeded ${limit} ${what} (cycle?)`, {
    at: '0x' + w.dentry.toString(16),
    parts: w.parts.length,
  } as never);
}
