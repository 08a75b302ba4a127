import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import {
  cacheRoot,
  execChecked,
  execProgram,
  exists,
  isPidAlive,
  labError,
  randomTag,
  rmQuiet,
  sleep,
} from './util.js';

/** A kernel the lab can boot: a Debian package holding vmlinuz and modules. */
export interface KernelSpec {
  readonly id: string;
  readonly aliases: readonly string[];
  /** Exact Debian package name (a glob would download hundreds of MB). */
  readonly package: string;
}

export const KERNELS: readonly KernelSpec[] = [
  { id: '6.1-cloud', aliases: ['6.1'], package: 'linux-image-6.1.0-57-cloud-amd64-unsigned' },
  { id: '6.12', aliases: ['6.12-generic'], package: 'linux-image-6.12.117+deb12-amd64-unsigned' },
];

export type KernelId = '6.1-cloud' | '6.12';

export function resolveKernel(idOrAlias: string): KernelSpec {
  const k = KERNELS.find((s) => s.id === idOrAlias || s.aliases.includes(idOrAlias));
  if (!k) {
    throw labError(`unknown lab kernel '${idOrAlias}' (known: ${KERNELS.map((s) => s.id).join(', ')})`, {
      kernel: idOrAlias,
    });
  }
  return k;
}

/** A downloaded and extracted kernel package in the cache. */
export interface FetchedKernel {
  readonly id: string;
  readonly package: string;
  /** Debian package version, e.g. 6.1.192-3. */
  readonly version: string;
  /** Kernel release (`uname -r`), from the lib/modules directory name. */
  readonly release: string;
  /** Extracted package root. */
  readonly root: string;
  readonly vmlinuz: string;
  /** lib/modules/<release> inside root. */
  readonly modulesDir: string;
  /** True when the cache already held it. */
  readonly cached: boolean;
  /** Time spent downloading + extracting (0 when cached). */
  readonly fetchMs: number;
}

interface KernelMeta {
  package: string;
  version: string;
  release: string;
  vmlinuz: string;
  deb: string;
}

export interface FetchOptions {
  cacheDir?: string;
  /** Overall time allowed for download + extract (default 15 min). */
  timeoutMs?: number;
  /** Progress messages (e.g. to stderr). */
  log?: (msg: string) => void;
}

export function kernelCacheDir(cacheDir = cacheRoot()): string {
  return join(cacheDir, 'kernels');
}

let aptUpdated = false;

/**
 * Download (apt-get download <exact package>) and extract (dpkg-deb -x) a lab kernel into the
 * cache, once. Concurrent callers (threads, processes) serialise on a lock directory and the
 * result is published by an atomic rename, so the cache is never seen half-written.
 */
export async function fetchKernel(idOrAlias: string, opts: FetchOptions = {}): Promise<FetchedKernel> {
  const spec = resolveKernel(idOrAlias);
  const base = kernelCacheDir(opts.cacheDir);
  const finalDir = join(base, spec.package);
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  const hit = await readCached(spec, finalDir);
  if (hit) return hit;
  await fsp.mkdir(base, { recursive: true });
  const release = await acquireLock(join(base, `${spec.package}.lock`), timeoutMs);
  try {
    const again = await readCached(spec, finalDir);
    if (again) return again;
    const t0 = Date.now();
    const work = join(base, `.tmp-${spec.package}-${process.pid}-${randomTag()}`);
    await fsp.mkdir(work, { recursive: true });
    try {
      opts.log?.(`pmi-lab: downloading ${spec.package}`);
      let deb: string;
      try {
        deb = await aptDownload(spec.package, work, timeoutMs);
      } catch (e) {
        if (aptUpdated) throw e;
        opts.log?.(`pmi-lab: apt-get download failed; running apt-get update and retrying`);
        await execChecked('apt-get', ['update'], { timeoutMs: Math.min(timeoutMs, 10 * 60_000) }).catch((u) => {
          throw labError(
            `apt-get download ${spec.package} failed and apt-get update failed too`,
            { package: spec.package },
            u,
          );
        });
        aptUpdated = true;
        deb = await aptDownload(spec.package, work, timeoutMs);
      }
      opts.log?.(`pmi-lab: extracting ${basename(deb)}`);
      const root = join(work, 'root');
      await execChecked('dpkg-deb', ['-x', deb, root], { timeoutMs });
      const meta = await describeExtracted(spec, root, basename(deb));
      await fsp.writeFile(join(work, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
      await fsp.rm(deb, { force: true });
      try {
        await fsp.rename(work, finalDir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      }
    } finally {
      await rmQuiet(work);
    }
    const done = await readCached(spec, finalDir, Date.now() - t0);
    if (!done) throw labError(`kernel cache for ${spec.package} is incomplete after extraction`, { dir: finalDir });
    return done;
  } finally {
    await release();
  }
}

async function aptDownload(pkg: string, dir: string, timeoutMs: number): Promise<string> {
  const r = await execProgram('apt-get', ['download', pkg], { cwd: dir, timeoutMs });
  const debs = (await fsp.readdir(dir)).filter((f) => f.endsWith('.deb'));
  if (r.code !== 0 || debs.length !== 1) {
    throw labError(
      `apt-get download ${pkg} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`,
      {
        package: pkg,
        stderr: r.stderr.slice(-2000),
      },
    );
  }
  return join(dir, debs[0]);
}

async function describeExtracted(spec: KernelSpec, root: string, deb: string): Promise<KernelMeta> {
  const boot = join(root, 'boot');
  const vmlinuz = (await fsp.readdir(boot).catch(() => [] as string[])).find((f) => f.startsWith('vmlinuz-'));
  const mods = await fsp.readdir(join(root, 'lib', 'modules')).catch(() => [] as string[]);
  if (!vmlinuz || mods.length !== 1) {
    throw labError(`package ${spec.package} has no boot/vmlinuz-* or not exactly one lib/modules/* directory`, {
      package: spec.package,
      modules_dirs: mods,
    });
  }
  // linux-image-6.1.0-57-cloud-amd64-unsigned_6.1.192-3_amd64.deb → 6.1.192-3
  const version = deb.split('_')[1] ?? '';
  return { package: spec.package, version, release: mods[0], vmlinuz: join('boot', vmlinuz), deb };
}

async function readCached(spec: KernelSpec, dir: string, fetchMs = 0): Promise<FetchedKernel | undefined> {
  let meta: KernelMeta;
  try {
    meta = JSON.parse(await fsp.readFile(join(dir, 'meta.json'), 'utf8')) as KernelMeta;
  } catch {
    return undefined;
  }
  const root = join(dir, 'root');
  const vmlinuz = join(root, meta.vmlinuz);
  if (!(await exists(vmlinuz))) return undefined;
  return {
    id: spec.id,
    package: spec.package,
    version: meta.version,
    release: meta.release,
    root,
    vmlinuz,
    modulesDir: join(root, 'lib', 'modules', meta.release),
    cached: fetchMs === 0,
    fetchMs,
  };
}

/** A lock directory holding the owner's pid; a lock whose owner died is broken. */
export async function acquireLock(lockDir: string, timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fsp.mkdir(lockDir);
      await fsp.writeFile(join(lockDir, 'owner'), String(process.pid));
      return async () => rmQuiet(lockDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw labError(`cannot create lock ${lockDir}`, {}, e);
    }
    const owner = Number(await fsp.readFile(join(lockDir, 'owner'), 'utf8').catch(() => ''));
    const st = await fsp.stat(lockDir).catch(() => undefined);
    const stale = owner > 0 ? !isPidAlive(owner) : st !== undefined && Date.now() - st.mtimeMs > 30_000;
    if (stale) {
      await rmQuiet(lockDir);
      continue;
    }
    if (Date.now() >= deadline) throw labError(`timed out waiting for lock ${lockDir} (held by pid ${owner})`, {});
    await sleep(200);
  }
}

/** A kernel module file from the package, decompressed on the host, with its dependencies. */
export interface ModuleFile {
  readonly name: string;
  /** Decompressed .ko in the cache. */
  readonly path: string;
  /** Module names from .modinfo `depends=`. */
  readonly depends: readonly string[];
}

const normName = (n: string) => n.replace(/-/g, '_');

async function indexModules(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const ent of await fsp.readdir(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) await walk(p);
      else {
        const m = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(ent.name);
        if (m) out.set(normName(m[1]), p);
      }
    }
  };
  await walk(join(dir, 'kernel'));
  return out;
}

const moduleIndexes = new Map<string, Promise<Map<string, string>>>();

/**
 * The named modules and everything they depend on, decompressed (xz/zstd on the host), in
 * load order (dependencies first).
 */
export async function kernelModules(kernel: FetchedKernel, names: readonly string[]): Promise<ModuleFile[]> {
  let idx = moduleIndexes.get(kernel.modulesDir);
  if (!idx) {
    idx = indexModules(kernel.modulesDir);
    moduleIndexes.set(kernel.modulesDir, idx);
  }
  const index = await idx;
  const out: ModuleFile[] = [];
  const seen = new Set<string>();
  const visit = async (name: string, chain: string[]): Promise<void> => {
    const n = normName(name);
    if (seen.has(n)) return;
    if (chain.includes(n)) throw labError(`module dependency cycle: ${[...chain, n].join(' -> ')}`, {});
    const src = index.get(n);
    if (!src)
      throw labError(`module ${name} not found in ${kernel.package}`, { module: name, package: kernel.package });
    const path = await decompressModule(kernel, n, src);
    const depends = readModinfo(await fsp.readFile(path), 'depends')
      .split(',')
      .filter((s) => s.length > 0);
    for (const d of depends) await visit(d, [...chain, n]);
    seen.add(n);
    out.push({ name: n, path, depends });
  };
  for (const n of names) await visit(n, []);
  return out;
}

async function decompressModule(kernel: FetchedKernel, name: string, src: string): Promise<string> {
  const dir = join(kernel.root, '..', 'ko');
  const dst = join(dir, `${name}.ko`);
  if (await exists(dst)) return dst;
  await fsp.mkdir(dir, { recursive: true });
  const tmp = `${dst}.tmp-${process.pid}-${randomTag()}`;
  try {
    if (src.endsWith('.xz')) await execChecked('xz', ['-dc', src], { timeoutMs: 60_000, stdoutFile: tmp });
    else if (src.endsWith('.zst')) await execChecked('zstd', ['-dcq', src], { timeoutMs: 60_000, stdoutFile: tmp });
    else if (src.endsWith('.gz')) await execChecked('gzip', ['-dc', src], { timeoutMs: 60_000, stdoutFile: tmp });
    else await fsp.copyFile(src, tmp);
    await fsp.rename(tmp, dst);
  } finally {
    await rmQuiet(tmp);
  }
  return dst;
}

/** A `key=value` string from a module's .modinfo section (first match), or ''. */
export function readModinfo(ko: Uint8Array, key: string): string {
  const buf = Buffer.from(ko.buffer, ko.byteOffset, ko.byteLength);
  const needle = Buffer.from(`\0${key}=`);
  const at = buf.indexOf(needle);
  if (at < 0) return '';
  const start = at + needle.length;
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end < 0 ? buf.length : end);
}
