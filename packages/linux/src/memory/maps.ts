/**
 * A process's memory map (/proc/PID/maps) from its mm_struct.
 *
 * VMAs: with `mm->mm_mt` (6.1+) the maple tree is walked breadth-first — one readStructs per tree
 * level for all nodes of the level. An encoded node pointer carries the node type in bits 3–6
 * (`enum maple_type` from BTF: maple_range_64 / maple_leaf_64 use `struct maple_range_64`,
 * maple_arange_64 `struct maple_arange_64`); the root is tagged as a node by bit 1 (else it is the
 * only entry), an internal node's non-NULL slots are all child nodes; the used slots end at the
 * node's data end (pivots and metadata, as ma_data_end()). Older kernels: the `mm->mmap` /
 * `vm_next` list. Every walk is bounded (nodes, depth, map_count), VMAs whose `vm_mm` is not the
 * mm are dropped, and a count that differs from `mm->map_count` makes the map partial.
 *
 * Names follow show_map_vma(): the file path (dentryPaths), else `vm_ops == &special_mapping_vmops`
 * → the vm_special_mapping's name ([vdso], [vvar]), else [heap] / [stack] from mm->brk /
 * start_stack.
 */
import { PmiError } from '@pmi/core';
import { collect, walkChain, type KernelObjects, type Layout, type StructView } from '@pmi/kernel';
import { dentryPaths } from './dentry.js';

export interface MapRow {
  start: string;
  end: string;
  /** rwxp / rwxs like /proc/PID/maps. */
  perms: string;
  /** File offset (vm_pgoff << 12) for file mappings, 0 otherwise. */
  offset: string;
  /** "MAJOR:MINOR" in hex, as /proc prints the file's s_dev. */
  dev: string;
  inode: number;
  path: string;
  /** vm_area_struct address. */
  vma: string;
}

export interface MapsResult {
  rows: MapRow[];
  warnings: string[];
  partial: boolean;
  /** Where the VMAs came from: the maple tree `mm->mm_mt` (6.1+) or the `mm->mmap` / `vm_next` list. */
  method: VmaMethod;
}

export type VmaMethod = 'maple_tree' | 'mmap_list';

export interface VmaWalk {
  vmas: bigint[];
  partial: boolean;
  method: VmaMethod;
}

const VM_READ = 1;
const VM_WRITE = 2;
const VM_EXEC = 4;
const VM_MAYSHARE = 0x80;
const MAX_NODES = 200_000;
const MAX_DEPTH = 32;
const ULONG_MAX = (1n << 64n) - 1n;

const hex = (v: bigint) => '0x' + BigInt.asUintN(64, v).toString(16);
const isKernelPtr = (v: bigint) => v >= 0xff00000000000000n && v < ULONG_MAX - 4096n;

/**
 * VMA addresses of an mm, in tree (address) order: the maple tree where `mm_struct` has `mm_mt`
 * (6.1+), else the `mmap` list linked through `vm_area_struct.vm_next`.
 */
export async function vmaAddresses(k: KernelObjects, mm: bigint, warnings: string[] = []): Promise<VmaWalk> {
  if (k.hasField('mm_struct', 'mm_mt')) return { ...(await mapleVmas(k, mm, warnings)), method: 'maple_tree' };
  if (k.hasField('mm_struct', 'mmap') && k.hasField('vm_area_struct', 'vm_next'))
    return { ...(await listVmas(k, mm, warnings)), method: 'mmap_list' };
  throw new PmiError(
    'E_NOT_FOUND',
    'linux/maps',
    'mm_struct has neither mm_mt (maple tree) nor mmap (with vm_area_struct.vm_next)',
    { struct: 'mm_struct', field: 'mm_mt|mmap' },
  );
}

async function mapleVmas(
  k: KernelObjects,
  mm: bigint,
  warnings: string[],
): Promise<{ vmas: bigint[]; partial: boolean }> {
  const MM = k.layout('mm_struct', ['mm_mt.ma_root']);
  const root = (await k.read(mm, MM)).ptr('mm_mt.ma_root');
  const tLeaf = Number(k.btf.enumValue('maple_type', 'maple_leaf_64'));
  const tRange = Number(k.btf.enumValue('maple_type', 'maple_range_64'));
  const tArange = Number(k.btf.enumValue('maple_type', 'maple_arange_64'));
  const R = k.layout('maple_range_64', ['pivot', 'slot', 'meta.end']);
  const A = k.layout('maple_arange_64', ['pivot', 'slot', 'meta.end']);
  // the root is tagged as an xarray node (xa_mk_node: bit 1); otherwise it is the single entry at index 0
  const isNode = (e: bigint) => (e & 3n) === 2n && e > 4096n;
  const vmas: bigint[] = [];
  let partial = false;
  if (root === 0n) return { vmas, partial };
  if (!isNode(root)) {
    if (isKernelPtr(root)) vmas.push(root);
    return { vmas, partial };
  }
  let level: { enc: bigint; max: bigint }[] = [{ enc: root, max: ULONG_MAX }];
  let nodes = 0;
  for (let depth = 0; level.length > 0; depth++) {
    if (depth >= MAX_DEPTH || (nodes += level.length) > MAX_NODES) {
      warnings.push(
        `maple tree of mm ${hex(mm)}: more than ${depth >= MAX_DEPTH ? MAX_DEPTH + ' levels' : MAX_NODES + ' nodes'}; map is partial`,
      );
      partial = true;
      break;
    }
    const next: { enc: bigint; max: bigint }[] = [];
    const groups: [Layout, { enc: bigint; max: bigint; type: number }[]][] = [
      [R, []],
      [A, []],
    ];
    for (const n of level) {
      const type = Number((n.enc >> 3n) & 0xfn);
      if (type === tLeaf || type === tRange) groups[0][1].push({ ...n, type });
      else if (type === tArange) groups[1][1].push({ ...n, type });
      else {
        warnings.push(`maple node ${hex(n.enc)} of mm ${hex(mm)} has unexpected type ${type}; skipped`);
        partial = true;
      }
    }
    for (const [L, group] of groups) {
      if (group.length === 0) continue;
      const views = await k.readStructs(
        group.map((n) => n.enc & ~0xffn),
        L,
      );
      views.forEach((v, i) => {
        const n = group[i];
        if (v instanceof PmiError) {
          warnings.push(`maple node ${hex(n.enc)} of mm ${hex(mm)} unreadable: ${v.message}`);
          partial = true;
          return;
        }
        const end = dataEnd(v, L === A, n.max);
        const npiv = v.length('pivot');
        for (let s = 0; s <= end; s++) {
          const e = BigInt.asUintN(64, BigInt(v.array('slot', s)));
          if (e === 0n) continue;
          if (n.type === tLeaf) {
            if (isKernelPtr(e)) vmas.push(e);
          } else if (isKernelPtr(e & ~0xffn)) {
            // an internal node's slots are encoded child nodes (mte_mk_node: address | type << 3 |
            // MAPLE_ENODE_NULL), without the root's xa_mk_node tag bit
            const p = s < end && s < npiv ? BigInt.asUintN(64, BigInt(v.array('pivot', s))) : n.max;
            next.push({ enc: e, max: p === 0n ? n.max : p });
          } else {
            warnings.push(`maple node ${hex(n.enc)} of mm ${hex(mm)}: slot ${s} = ${hex(e)} is not a node; skipped`);
            partial = true;
          }
        }
      });
    }
    level = next;
  }
  return { vmas, partial };
}

/** ma_data_end(): index of the last used slot. */
function dataEnd(v: StructView, arange: boolean, max: bigint): number {
  const slots = v.length('slot');
  const metaEnd = Math.min(v.num('meta.end'), slots - 1);
  if (arange) return metaEnd;
  const last = v.length('pivot') - 1;
  const piv = BigInt.asUintN(64, BigInt(v.array('pivot', last)));
  if (piv === 0n) return metaEnd;
  if (piv === max) return last;
  return last + 1;
}

/**
 * The `mm->mmap` list (before 6.1): VMAs in address order, linked through `vm_area_struct.vm_next`,
 * NULL-terminated. Walked with the shared bounded chase (walkChain), from a head placed so that its
 * `vm_next` is `mm->mmap`; at most map_count + 16 VMAs (a longer list is corrupt), a cycle or an
 * unreadable VMA ends it with a warning and a partial map.
 */
async function listVmas(
  k: KernelObjects,
  mm: bigint,
  warnings: string[],
): Promise<{ vmas: bigint[]; partial: boolean }> {
  const MM = k.layout('mm_struct', ['mmap', 'map_count']);
  const m = await k.read(mm, MM);
  const max = Math.min(Math.max(m.num('map_count'), 0) + 16, 1_000_000);
  const V = k.layout('vm_area_struct', ['vm_next']);
  const head = m.addressOf('mmap') - BigInt(V.offsetOf('vm_next'));
  const { items, error } = await collect(
    walkChain(k, head, V, 'vm_next', 'vm_next', { max, name: `mmap list of mm ${hex(mm)}` }),
  );
  if (error) warnings.push(`${error.message}; map is partial`);
  return { vmas: items.map((v) => v.va), partial: error !== undefined };
}

/** The memory map of the mm at `mm` (a task's `mm` pointer). */
export async function listMaps(k: KernelObjects, mm: bigint): Promise<MapsResult> {
  const warnings: string[] = [];
  const { vmas, partial: walkPartial, method } = await vmaAddresses(k, mm, warnings);
  let partial = walkPartial;
  const V = k.layout('vm_area_struct', [
    'vm_start',
    'vm_end',
    'vm_flags',
    'vm_pgoff',
    'vm_mm',
    'vm_ops',
    'vm_private_data',
    'vm_file',
    'vm_file.f_path.mnt',
    'vm_file.f_path.dentry',
    'vm_file.f_inode.i_ino',
    'vm_file.f_inode.i_sb.s_dev',
  ]);
  const MMF = k.layout('mm_struct', ['brk', 'start_brk', 'start_stack', 'map_count']);
  const mmv = await k.read(mm, MMF);
  const views = await k.readStructs(vmas, V);
  const ok: StructView[] = [];
  views.forEach((v, i) => {
    if (v instanceof PmiError) {
      warnings.push(`VMA ${hex(vmas[i])} unreadable: ${v.message}`);
      partial = true;
    } else if (v.ptr('vm_mm') === mm) ok.push(v);
  });
  ok.sort((a, b) => (a.ptr('vm_start') < b.ptr('vm_start') ? -1 : 1));
  // the kernel counts its VMAs: a walk that found another number missed some (or read a changing map)
  const mapCount = mmv.num('map_count');
  if (!partial && ok.length !== mapCount) {
    warnings.push(`mm ${hex(mm)}: ${ok.length} VMAs found (${method}), map_count is ${mapCount}; map is partial`);
    partial = true;
  }
  const special = safeSymbol(k, 'special_mapping_vmops');
  const withFile = ok.filter((v) => !v.isNull('vm_file') && v.reached('vm_file.f_path.dentry'));
  const paths = await dentryPaths(
    k,
    withFile.map((v) => ({ mnt: v.ptr('vm_file.f_path.mnt'), dentry: v.ptr('vm_file.f_path.dentry') })),
  );
  const pathOf = new Map<StructView, string>(withFile.map((v, i) => [v, paths[i].path]));
  for (const p of paths) if (p.error) warnings.push(`path of a mapped file: ${p.error.message}`);
  // special mapping names ([vdso], [vvar]) in one batch of pointer + string reads
  const specials = ok.filter(
    (v) => special !== undefined && v.ptr('vm_ops') === special && !v.isNull('vm_private_data'),
  );
  const specialName = new Map<StructView, string>();
  if (specials.length) {
    const S = k.layout('vm_special_mapping', ['name']);
    const sv = await k.readStructs(
      specials.map((v) => v.ptr('vm_private_data')),
      S,
    );
    const ops = sv.map((s) => ({ va: s instanceof PmiError ? 0n : s.ptr('name'), buf: new Uint8Array(64) }));
    const failed = new Set((await k.paging.readVirtualBatch(ops.filter((o) => o.va !== 0n))).map((f) => f.index));
    let j = 0;
    specials.forEach((v, i) => {
      if (ops[i].va === 0n) return;
      if (!failed.has(j)) {
        const b = Buffer.from(ops[i].buf);
        const nul = b.indexOf(0);
        specialName.set(v, b.subarray(0, nul < 0 ? b.length : nul).toString('utf8'));
      }
      j++;
    });
  }
  const brk = mmv.ptr('brk');
  const startBrk = mmv.ptr('start_brk');
  const startStack = mmv.ptr('start_stack');
  const rows = ok.map((v): MapRow => {
    const flags = v.num('vm_flags');
    const start = v.ptr('vm_start');
    const end = v.ptr('vm_end');
    const perms =
      (flags & VM_READ ? 'r' : '-') +
      (flags & VM_WRITE ? 'w' : '-') +
      (flags & VM_EXEC ? 'x' : '-') +
      (flags & VM_MAYSHARE ? 's' : 'p');
    const file = pathOf.get(v);
    if (file !== undefined) {
      const dev = v.reached('vm_file.f_inode.i_sb.s_dev') ? v.num('vm_file.f_inode.i_sb.s_dev') : 0;
      return {
        start: hex(start),
        end: hex(end),
        perms,
        offset: hex(BigInt(v.int('vm_pgoff')) << 12n),
        dev: `${hh(Math.floor(dev / 2 ** 20))}:${hh(dev % 2 ** 20)}`,
        inode: v.reached('vm_file.f_inode.i_ino') ? v.num('vm_file.f_inode.i_ino') : 0,
        path: file,
        vma: hex(v.va),
      };
    }
    let path = specialName.get(v) ?? '';
    if (!path && start <= brk && end >= startBrk) path = '[heap]';
    else if (!path && start <= startStack && end >= startStack) path = '[stack]';
    return { start: hex(start), end: hex(end), perms, offset: '0x0', dev: '00:00', inode: 0, path, vma: hex(v.va) };
  });
  return { rows, warnings, partial, method };
}

function hh(n: number): string {
  return n.toString(16).padStart(2, '0');
}

function safeSymbol(k: KernelObjects, name: string): bigint | undefined {
  try {
    return k.symbol(name);
  } catch {
    return undefined;
  }
}
