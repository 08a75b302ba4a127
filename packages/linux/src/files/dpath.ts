/**
 * Minimal mount-aware d_path: (vfsmount, dentry) → "/a/b/c", resolved for many paths at once,
 * one batch per directory level (dentries and mounts are cached across paths).
 *
 * TODO(issue 5): replace with the shared dentryPath() once it lands (one d_path in the codebase).
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';

export interface PathRef {
  /** `struct vfsmount *` (as in `struct path`). */
  mnt: bigint;
  dentry: bigint;
}

export interface ResolvedPath {
  /** Full path from the namespace root ("/etc/passwd"); " (deleted)" appended for unlinked dentries. */
  path: string;
  /** The leaf dentry's own name ("passwd", "[eventpoll]"). */
  name: string;
  /** Set when the walk could not finish (unreadable dentry/mount, too deep): `path` is partial. */
  error?: string;
}

/** Deepest path followed (directory levels plus mount crossings). */
const MAX_DEPTH = 256;
const NAME_MAX = 255;

interface DentryInfo {
  parent: bigint;
  name: string;
  unhashed: boolean;
}

interface MountInfo {
  /** `struct mount *` of the parent mount. */
  parent: bigint;
  mountpoint: bigint;
  root: bigint;
}

export class DentryPaths {
  private readonly D: Layout;
  private readonly M: Layout;
  private readonly dentries = new Map<bigint, DentryInfo | string>();
  private readonly mounts = new Map<bigint, MountInfo | string>();
  private readonly mntOff: bigint;

  constructor(private readonly k: KernelObjects) {
    this.D = k.layout('dentry', ['d_parent', 'd_name.len', 'd_name.name', 'd_iname?', 'd_shortname?', 'd_hash.pprev']);
    this.M = k.layout('mount', ['mnt_parent', 'mnt_mountpoint', 'mnt.mnt_root']);
    this.mntOff = BigInt(this.M.offsetOf('mnt'));
  }

  /** Resolve many paths; one readStructs per level for all of them. */
  async resolve(refs: readonly PathRef[]): Promise<ResolvedPath[]> {
    interface Walk {
      mount: bigint;
      dentry: bigint;
      parts: string[];
      done: boolean;
      error?: string;
      leaf: bigint;
    }
    const walks: Walk[] = refs.map((r) => ({
      mount: r.mnt - this.mntOff,
      dentry: r.dentry,
      parts: [],
      done: r.dentry === 0n || r.mnt === 0n,
      error: r.dentry === 0n || r.mnt === 0n ? 'NULL path' : undefined,
      leaf: r.dentry,
    }));
    for (let depth = 0; depth <= MAX_DEPTH; depth++) {
      const live = walks.filter((w) => !w.done);
      if (live.length === 0) break;
      if (depth === MAX_DEPTH) {
        for (const w of live) {
          w.done = true;
          w.error = `deeper than ${MAX_DEPTH} levels (cycle?)`;
        }
        break;
      }
      await this.load(
        live.map((w) => w.dentry),
        live.map((w) => w.mount),
      );
      for (const w of live) {
        const m = this.mounts.get(w.mount)!;
        const d = this.dentries.get(w.dentry)!;
        if (typeof m === 'string' || typeof d === 'string') {
          w.done = true;
          w.error = typeof m === 'string' ? m : (d as string);
          continue;
        }
        if (w.dentry === m.root) {
          if (m.parent === w.mount || m.parent === 0n) w.done = true;
          else {
            w.dentry = m.mountpoint;
            w.mount = m.parent;
          }
          continue;
        }
        if (d.parent === w.dentry || d.parent === 0n) {
          // a disconnected or pseudo dentry (sockets, pipes, anon inodes): its own name only
          w.parts.push(d.name);
          w.done = true;
          continue;
        }
        w.parts.push(d.name);
        w.dentry = d.parent;
      }
    }
    // leaf names (all leaves were loaded at depth 0)
    return walks.map((w) => {
      const leaf = this.dentries.get(w.leaf);
      const info = typeof leaf === 'object' ? leaf : undefined;
      let path = '/' + w.parts.reverse().join('/');
      if (info?.unhashed && info.parent !== w.leaf && w.parts.length > 0) path += ' (deleted)';
      return { path, name: info?.name ?? '', ...(w.error ? { error: w.error } : {}) };
    });
  }

  private async load(dentries: bigint[], mounts: bigint[]): Promise<void> {
    const dv = [...new Set(dentries.filter((d) => !this.dentries.has(d)))];
    const mv = [...new Set(mounts.filter((m) => !this.mounts.has(m)))];
    const [ds, ms] = await Promise.all([this.k.readStructs(dv, this.D), this.k.readStructs(mv, this.M)]);
    mv.forEach((va, i) => {
      const v = ms[i];
      if (v instanceof PmiError) this.mounts.set(va, `mount ${hex(va)} unreadable: ${v.message}`);
      else
        this.mounts.set(va, {
          parent: v.ptr('mnt_parent'),
          mountpoint: v.ptr('mnt_mountpoint'),
          root: v.ptr('mnt.mnt_root'),
        });
    });
    // names: inline ones come with the dentry, others are read in one batch
    const far: { va: bigint; buf: Uint8Array; i: number }[] = [];
    const views: (StructView | undefined)[] = [];
    dv.forEach((va, i) => {
      const v = ds[i];
      if (v instanceof PmiError) {
        this.dentries.set(va, `dentry ${hex(va)} unreadable: ${v.message}`);
        return;
      }
      views[i] = v;
      const len = Math.min(v.num('d_name.len'), NAME_MAX);
      const p = v.ptr('d_name.name');
      const inl = this.D.has('d_iname') ? 'd_iname' : this.D.has('d_shortname') ? 'd_shortname' : undefined;
      if (inl && p === v.addressOf(inl)) {
        const b = v.bytes(inl);
        this.dentries.set(va, info(v, Buffer.from(b.subarray(0, Math.min(len, b.length)))));
      } else far.push({ va: p, buf: new Uint8Array(len), i });
    });
    if (far.length > 0) {
      const fails = await this.k.paging.readVirtualBatch(far);
      const bad = new Set(fails.map((f) => f.index));
      far.forEach((f, j) => {
        const v = views[f.i]!;
        this.dentries.set(dv[f.i], info(v, bad.has(j) ? Buffer.from('?') : Buffer.from(f.buf)));
      });
    }
  }
}

function info(v: StructView, name: Buffer): DentryInfo {
  const nul = name.indexOf(0);
  return {
    parent: v.ptr('d_parent'),
    name: (nul >= 0 ? name.subarray(0, nul) : name).toString('utf8'),
    unhashed: v.isNull('d_hash.pprev'),
  };
}

function hex(v: bigint): string {
  return '0x' + BigInt.asUintN(64, v).toString(16);
}
