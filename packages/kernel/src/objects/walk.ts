/**
 * Bounded walks of kernel linked structures. Link pointers are chased node by node (synchronous
 * reads on local sources; one small batch per node on remote ones — a list is inherently serial),
 * and every `chunk` nodes the containing objects are read with one readStructs (one batch, plus
 * one per pointer level of the layout).
 *
 * Semantics (all walkers): the async iterator yields the objects it could read, in list order,
 * then — if the structure is broken — throws one PmiError E_LIST with data {list, reason, at,
 * after, count}: reason 'cycle' (a node seen twice that is not the head), 'unreadable' (the node
 * or its object does not translate/read; the cause is attached), 'too_long' (more than `max`
 * nodes), 'null_link' (a NULL next pointer in a circular list). `collectList` returns
 * `{items, error}` instead of throwing. Nothing else is thrown for broken lists, and no walk
 * reads more than `max` nodes.
 */
import { PmiError } from '@pmi/core';
import type { X86Paging } from '../paging/x86.js';
import { listError } from './errors.js';
import type { KernelObjects } from './kernel.js';
import type { Layout } from './layout.js';
import type { StructView } from './view.js';

export interface WalkOptions {
  /** Most nodes to visit (default 1,000,000); more → E_LIST 'too_long' after yielding `max` items. */
  max?: number;
  /** Abort the walk (the iterator throws the signal's reason). */
  signal?: AbortSignal;
  /** Objects per batched struct read (default 1024). */
  chunk?: number;
  /** Name for errors (default `<struct>.<member>`). */
  name?: string;
}

export interface HlistOptions extends WalkOptions {
  /** hlist_nulls: a link with bit 0 set ends the list (a "nulls" marker). */
  nulls?: boolean;
}

export interface ListResult {
  items: StructView[];
  error?: PmiError;
}

export const DEFAULT_MAX = 1_000_000;
const DEFAULT_CHUNK = 1024;

/** Reads one 8-byte link: synchronously when the source allows it, else one batch per call. */
class LinkReader {
  private readonly buf = new Uint8Array(8);
  private readonly dv = new DataView(this.buf.buffer);
  readonly sync: boolean;
  constructor(private readonly paging: X86Paging) {
    this.sync = paging.mem.readSync !== undefined;
  }
  readSync(va: bigint): bigint {
    this.paging.readVirtualSync(va, this.buf);
    return this.dv.getBigUint64(0, true);
  }
  async read(va: bigint): Promise<bigint> {
    if (this.sync) return this.readSync(va);
    const f = await this.paging.readVirtualBatch([{ va, buf: this.buf }]);
    if (f.length > 0) throw f[0].error;
    return this.dv.getBigUint64(0, true);
  }
}

async function* flush(
  k: KernelObjects,
  T: Layout,
  vas: bigint[],
  nodes: bigint[],
  name: string,
  countBefore: number,
): AsyncGenerator<StructView, void> {
  if (vas.length === 0) return;
  const rs = await k.readStructs(vas, T);
  for (let i = 0; i < rs.length; i++) {
    const r = rs[i];
    if (r instanceof PmiError)
      throw listError('unreadable', name, nodes[i], i > 0 ? nodes[i - 1] : undefined, countBefore + i, r);
    yield r;
  }
}

/**
 * The bounded pointer chase shared by list and hlist walks: follows `next` links from `first`,
 * stopping where `end` says (or with E_LIST on NULL, a cycle, too many nodes, an unreadable
 * link), reading the objects `chunk` at a time. Yields what it read, then throws the E_LIST.
 */
async function* chaseLinks(
  k: KernelObjects,
  T: Layout,
  r: LinkReader,
  first: bigint,
  o: {
    name: string;
    max: number;
    chunk: number;
    memberOff: bigint;
    nextOff: bigint;
    signal?: AbortSignal;
    head: bigint;
    end: (node: bigint) => 'end' | 'null' | undefined;
  },
): AsyncGenerator<StructView, void> {
  const { name, max, chunk, memberOff, nextOff } = o;
  const seen = new Set<bigint>();
  let vas: bigint[] = [];
  let nodes: bigint[] = [];
  let node = first;
  let prev = o.head; // the error's `after` for the first node
  let count = 0;
  let error: PmiError | undefined;
  for (;;) {
    const stop = o.end(node);
    if (stop === 'end') break;
    if (stop === 'null') {
      error = listError('null_link', name, 0n, prev, count);
      break;
    }
    if (count >= max) {
      error = listError('too_long', name, node, prev, max);
      break;
    }
    if (seen.has(node)) {
      error = listError('cycle', name, node, prev, count);
      break;
    }
    seen.add(node);
    let next: bigint;
    try {
      next = r.sync ? r.readSync(node + nextOff) : await r.read(node + nextOff);
    } catch (e) {
      error = listError('unreadable', name, node, prev, count, e);
      break;
    }
    vas.push(node - memberOff);
    nodes.push(node);
    count++;
    if (vas.length >= chunk) {
      yield* flush(k, T, vas, nodes, name, count - vas.length);
      vas = [];
      nodes = [];
      o.signal?.throwIfAborted();
    } else if ((count & 4095) === 0) o.signal?.throwIfAborted();
    prev = node;
    node = next;
  }
  yield* flush(k, T, vas, nodes, name, count - vas.length);
  if (error) throw error;
}

/**
 * Walk a circular `list_head` list from its head (the head itself is not an item: for
 * `init_task.tasks` init_task is not yielded). `member` is the list_head member of T linking the
 * items; each item is container_of(node, T, member).
 */
export async function* walkList(
  k: KernelObjects,
  headVa: bigint,
  T: Layout,
  member: string,
  opts: WalkOptions = {},
): AsyncGenerator<StructView, void> {
  const nextOff = BigInt(k.btf.fieldOffset('list_head', 'next'));
  // circular: back at the head is the end; NULL is a broken link
  yield* walkFromHead(k, headVa, T, member, opts, nextOff, nextOff, (n, head) =>
    n === head ? 'end' : n === 0n ? 'null' : undefined,
  );
}

/**
 * The start shared by list and hlist walks: read the head's first link (at `firstOff`), then chase
 * `next` links (at `nextOff` in each node) until `end` says so — bounded, see chaseLinks.
 */
async function* walkFromHead(
  k: KernelObjects,
  headVa: bigint,
  T: Layout,
  member: string,
  opts: WalkOptions,
  firstOff: bigint,
  nextOff: bigint,
  end: (node: bigint, head: bigint) => 'end' | 'null' | undefined,
  // where the links point inside an item (list_head/hlist_node member); 0 = at the item itself
  memberOff = BigInt(T.offsetOf(member)),
): AsyncGenerator<StructView, void> {
  const name = opts.name ?? `${T.name}.${member}`;
  const head = BigInt.asUintN(64, headVa);
  const r = new LinkReader(k.paging);
  opts.signal?.throwIfAborted();
  let node: bigint;
  try {
    node = await r.read(head + firstOff);
  } catch (e) {
    throw listError('unreadable', name, head, undefined, 0, e);
  }
  yield* chaseLinks(k, T, r, node, {
    name,
    max: opts.max ?? DEFAULT_MAX,
    chunk: Math.max(1, opts.chunk ?? DEFAULT_CHUNK),
    memberOff,
    nextOff,
    signal: opts.signal,
    head,
    end: (n) => end(n, head),
  });
}

/** Run a walker to the end: `{items, error}` (error = the E_LIST, or another PmiError). */
export async function collect(it: AsyncIterable<StructView>): Promise<ListResult> {
  const items: StructView[] = [];
  try {
    for await (const x of it) items.push(x);
    return { items };
  } catch (e) {
    if (e instanceof PmiError) return { items, error: e };
    throw e;
  }
}

export function collectList(
  k: KernelObjects,
  headVa: bigint,
  T: Layout,
  member: string,
  opts?: WalkOptions,
): Promise<ListResult> {
  return collect(walkList(k, headVa, T, member, opts));
}

/** Walk an `hlist_head` (NULL-terminated; `nulls: true` for hlist_nulls_head). */
export async function* walkHlist(
  k: KernelObjects,
  headVa: bigint,
  T: Layout,
  member: string,
  opts: HlistOptions = {},
): AsyncGenerator<StructView, void> {
  const firstOff = BigInt(k.btf.fieldOffset(opts.nulls ? 'hlist_nulls_head' : 'hlist_head', 'first'));
  const nextOff = BigInt(k.btf.fieldOffset(opts.nulls ? 'hlist_nulls_node' : 'hlist_node', 'next'));
  // NULL-terminated; hlist_nulls ends on a "nulls" marker (low bit set)
  yield* walkFromHead(k, headVa, T, member, opts, firstOff, nextOff, (n) =>
    n === 0n || (opts.nulls && (n & 1n) === 1n) ? 'end' : undefined,
  );
}

/**
 * Walk a NULL-terminated chain of T objects whose links point at the next object itself — e.g.
 * `struct resource`: `iomem_resource.child`, then each entry's `sibling`. `headVa` is a T whose
 * `first` field holds the first link (the head is not an item); `next` is the link field of every
 * item. Same bounds and E_LIST errors as walkList.
 */
export async function* walkChain(
  k: KernelObjects,
  headVa: bigint,
  T: Layout,
  first: string,
  next: string,
  opts: WalkOptions = {},
): AsyncGenerator<StructView, void> {
  yield* walkFromHead(
    k,
    headVa,
    T,
    next,
    opts,
    BigInt(T.offsetOf(first)),
    BigInt(T.offsetOf(next)),
    (n) => (n === 0n ? 'end' : undefined),
    0n,
  );
}

/**
 * Walk an rb-tree in order (`rb_root` or `rb_root_cached`, whose first member is the rb_root).
 * The tree is read breadth-first, one batch per tree level (≈ 2·log2 n round trips), then the
 * objects in key order. On a broken tree the reachable nodes are yielded in order, then E_LIST.
 */
export async function* walkRbTree(
  k: KernelObjects,
  rootVa: bigint,
  T: Layout,
  member: string,
  opts: WalkOptions = {},
): AsyncGenerator<StructView, void> {
  const max = opts.max ?? DEFAULT_MAX;
  const chunk = Math.max(1, opts.chunk ?? DEFAULT_CHUNK);
  const name = opts.name ?? `${T.name}.${member}`;
  const memberOff = BigInt(T.offsetOf(member));
  const btf = k.btf;
  const rootOff = BigInt(btf.fieldOffset('rb_root', 'rb_node'));
  const leftOff = btf.fieldOffset('rb_node', 'rb_left');
  const rightOff = btf.fieldOffset('rb_node', 'rb_right');
  const nodeSize = btf.sizeOf('rb_node');
  const root = BigInt.asUintN(64, rootVa);
  const r = new LinkReader(k.paging);
  opts.signal?.throwIfAborted();
  let top: bigint;
  try {
    top = await r.read(root + rootOff);
  } catch (e) {
    throw listError('unreadable', name, root, undefined, 0, e);
  }
  const kids = new Map<bigint, [bigint, bigint]>();
  const parent = new Map<bigint, bigint>();
  const seen = new Set<bigint>();
  let error: PmiError | undefined;
  let frontier: bigint[] = top === 0n ? [] : [top];
  if (top !== 0n) {
    seen.add(top);
    parent.set(top, root);
  }
  let count = frontier.length;
  while (frontier.length > 0 && !error) {
    opts.signal?.throwIfAborted();
    const bufs = frontier.map(() => new Uint8Array(nodeSize));
    const fails = await k.paging.readVirtualBatch(frontier.map((va, i) => ({ va, buf: bufs[i] })));
    const bad = new Map<number, PmiError>();
    for (const f of fails) bad.set(f.index, f.error);
    const next: bigint[] = [];
    for (let i = 0; i < frontier.length && !error; i++) {
      const n = frontier[i];
      const e = bad.get(i);
      if (e) {
        error = listError('unreadable', name, n, parent.get(n), kids.size, e);
        break;
      }
      const dv = new DataView(bufs[i].buffer);
      const left = dv.getBigUint64(leftOff, true);
      const right = dv.getBigUint64(rightOff, true);
      kids.set(n, [left, right]);
      for (const c of [left, right]) {
        if (c === 0n) continue;
        if (seen.has(c)) {
          error = listError('cycle', name, c, n, kids.size);
          break;
        }
        if (count >= max) {
          error = listError('too_long', name, c, n, max);
          break;
        }
        seen.add(c);
        parent.set(c, n);
        count++;
        next.push(c);
      }
    }
    frontier = next;
  }
  // in-order over the nodes read (subtrees of unread nodes are missing)
  const order: bigint[] = [];
  const stack: bigint[] = [];
  let cur = kids.has(top) ? top : 0n;
  while (cur !== 0n || stack.length > 0) {
    while (cur !== 0n) {
      stack.push(cur);
      const l = kids.get(cur)![0];
      cur = kids.has(l) ? l : 0n;
    }
    const n = stack.pop()!;
    order.push(n);
    const rt = kids.get(n)![1];
    cur = kids.has(rt) ? rt : 0n;
  }
  for (let i = 0; i < order.length; i += chunk) {
    const nodes = order.slice(i, i + chunk);
    yield* flush(
      k,
      T,
      nodes.map((n) => n - memberOff),
      nodes,
      name,
      i,
    );
  }
  if (error) throw error;
}
