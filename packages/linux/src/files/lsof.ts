/**
 * Open files of every process (or one): task->files->fdt->fd[0..max_fds), each non-NULL `struct
 * file` with its inode, position, flags, and a path as readlink(/proc/PID/fd/N) shows it.
 * Reads are batched: the fd arrays of all processes in one batch, all files in one readStructs,
 * all paths level by level.
 */
import { PmiError } from '@pmi/core';
import type { KernelObjects, StructView } from '@pmi/kernel';
import { dentryPaths } from '../memory/index.js';
import { fdTasks, type TaskRef } from './tasks.js';

export type FileType = 'file' | 'dir' | 'link' | 'char' | 'block' | 'fifo' | 'pipe' | 'socket' | 'anon' | 'unknown';

export interface OpenFile {
  pid: number;
  comm: string;
  fd: number;
  type: FileType;
  /** As readlink(/proc/PID/fd/FD): "/etc/passwd", "socket:[1234]", "pipe:[56]", "anon_inode:[eventpoll]". */
  path: string;
  inode: number;
  /** File position (f_pos). */
  pos: number;
  /** Open flags (f_flags, O_*), as /proc/PID/fdinfo shows them in octal. */
  flags: number;
  /** Access from f_mode: "r", "w", "rw" or "". */
  mode: string;
  /** `struct file *`. */
  file: bigint;
  /** For sockets: the `struct socket *` (file->private_data). */
  socket?: bigint;
}

export interface OpenFilesResult {
  rows: OpenFile[];
  warnings: string[];
}

export interface OpenFilesOptions {
  /** Only this process (thread-group id). */
  pid?: number;
  /** Largest fd table read per process (default 65536); larger ones are cut with a warning. */
  maxFds?: number;
}

const S_IFMT = 0o170000;
const MODES: Record<number, FileType> = {
  0o140000: 'socket',
  0o120000: 'link',
  0o100000: 'file',
  0o060000: 'block',
  0o040000: 'dir',
  0o020000: 'char',
  0o010000: 'fifo',
};
/** Pseudo filesystems whose d_dname gives the name (fs/*: sockfs, pipefs, anon_inodefs). */
const SOCKFS_MAGIC = 0x534f434b;
const PIPEFS_MAGIC = 0x50495045;
const ANON_INODE_FS_MAGIC = 0x09041934;

const hex = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

export async function listOpenFiles(k: KernelObjects, opts: OpenFilesOptions = {}): Promise<OpenFilesResult> {
  const warnings: string[] = [];
  const { tasks: all, error } = await fdTasks(k);
  if (error) warnings.push(`process list: ${error.message}`);
  const tasks = opts.pid === undefined ? all : all.filter((t) => t.pid === opts.pid);
  if (opts.pid !== undefined && tasks.length === 0) warnings.push(`no process with pid ${opts.pid}`);
  const maxFds = opts.maxFds ?? 65536;

  // 1. fd arrays, one batch for all processes
  const ops: { va: bigint; buf: Uint8Array }[] = [];
  const owners: TaskRef[] = [];
  for (const t of tasks) {
    const v = t.view;
    if (!v.reached('files.fdt.max_fds')) {
      const e = v.derefError('files.fdt.max_fds');
      // kernel threads and exiting tasks have no files_struct: nothing to list
      if (e && e.data?.reason !== 'null_pointer')
        warnings.push(`pid ${t.pid} (${t.comm}): fd table unreadable: ${e.message}`);
      continue;
    }
    let n = v.num('files.fdt.max_fds');
    const arr = v.ptr('files.fdt.fd');
    if (n === 0 || arr === 0n) continue;
    if (n > maxFds) {
      warnings.push(`pid ${t.pid} (${t.comm}): max_fds ${n} cut to ${maxFds}`);
      n = maxFds;
    }
    ops.push({ va: arr, buf: new Uint8Array(n * 8) });
    owners.push(t);
  }
  const failed = new Set<number>();
  for (const f of await k.paging.readVirtualBatch(ops)) {
    failed.add(f.index);
    const t = owners[f.index];
    warnings.push(`pid ${t.pid} (${t.comm}): fd array at ${hex(ops[f.index].va)} unreadable: ${f.error.message}`);
  }
  const slots: { t: TaskRef; fd: number; file: bigint }[] = [];
  ops.forEach((op, i) => {
    if (failed.has(i)) return;
    const dv = new DataView(op.buf.buffer, op.buf.byteOffset, op.buf.length);
    for (let fd = 0; fd * 8 < op.buf.length; fd++) {
      const lo = dv.getUint32(fd * 8, true);
      const hi = dv.getUint32(fd * 8 + 4, true);
      if (lo === 0 && hi === 0) continue;
      slots.push({ t: owners[i], fd, file: (BigInt(hi) << 32n) | BigInt(lo) });
    }
  });

  // 2. the files (shared ones read once)
  const F = k.layout('file', [
    'f_mode',
    'f_flags',
    'f_pos',
    'private_data',
    'f_path.mnt',
    'f_path.dentry',
    'f_inode.i_ino',
    'f_inode.i_mode',
    'f_path.dentry.d_sb.s_magic',
  ]);
  const fileVas = [...new Set(slots.map((s) => s.file))];
  const views = new Map<bigint, StructView | PmiError>();
  (await k.readStructs(fileVas, F)).forEach((v, i) => views.set(fileVas[i], v));

  // 3. paths of the files that need a d_path
  const needPath: StructView[] = [];
  for (const v of views.values())
    if (!(v instanceof PmiError) && v.reached('f_path.dentry.d_sb.s_magic')) needPath.push(v);
  const resolved = await dentryPaths(
    k,
    needPath.map((v) => ({ mnt: v.ptr('f_path.mnt'), dentry: v.ptr('f_path.dentry') })),
  );
  const pathOf = new Map<bigint, { path: string; error?: string }>();
  needPath.forEach((v, i) => pathOf.set(v.va, { path: resolved[i].path, error: resolved[i].error?.message }));

  const rows: OpenFile[] = [];
  for (const s of slots) {
    const v = views.get(s.file)!;
    const base = { pid: s.t.pid, comm: s.t.comm, fd: s.fd, file: s.file };
    if (v instanceof PmiError) {
      warnings.push(`pid ${s.t.pid} fd ${s.fd}: struct file unreadable: ${v.message}`);
      rows.push({ ...base, type: 'unknown', path: '', inode: 0, pos: 0, flags: 0, mode: '' });
      continue;
    }
    const inodeOk = v.reached('f_inode.i_mode');
    const ino = inodeOk ? v.num('f_inode.i_ino') : 0;
    const imode = inodeOk ? v.num('f_inode.i_mode') : 0;
    const magic = v.reached('f_path.dentry.d_sb.s_magic') ? v.num('f_path.dentry.d_sb.s_magic') : -1;
    let type: FileType = MODES[imode & S_IFMT] ?? (inodeOk ? 'anon' : 'unknown');
    if (type === 'fifo' && magic === PIPEFS_MAGIC) type = 'pipe';
    if (magic === ANON_INODE_FS_MAGIC) type = 'anon';
    const p = pathOf.get(s.file);
    if (p?.error) warnings.push(`pid ${s.t.pid} fd ${s.fd}: path partial: ${p.error}`);
    let path = p?.path ?? '';
    if (magic === SOCKFS_MAGIC) path = `socket:[${ino}]`;
    else if (magic === PIPEFS_MAGIC) path = `pipe:[${ino}]`;
    else if (magic === ANON_INODE_FS_MAGIC) path = `anon_inode:${(p?.path ?? '').replace(/^\//, '')}`; // a pseudo dentry's path is "/" + its name
    const fmode = v.num('f_mode');
    const row: OpenFile = {
      ...base,
      type,
      path,
      inode: ino,
      pos: v.num('f_pos'),
      flags: v.num('f_flags'),
      mode: (fmode & 1 ? 'r' : '') + (fmode & 2 ? 'w' : ''),
    };
    if (type === 'socket') row.socket = v.ptr('private_data');
    rows.push(row);
  }
  return { rows, warnings };
}
