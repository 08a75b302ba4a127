import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { cacheRoot, execChecked, exists, isPidAlive, labError, randomTag, rmQuiet, sleep } from './util.js';
import {
  candidateVersion,
  compareKernelVersions,
  downloadPackages,
  packageNames,
  privateApt,
  updatePrivateApt,
  type PrivateSuite,
} from './debian-archive.js';

/** A kernel the lab can boot: a Debian package holding vmlinuz and modules. */
export interface KernelSpec {
  readonly id: string;
  readonly aliases: readonly string[];
  /** Exact Debian package name (a glob would download hundreds of MB). */
  readonly package: string;
  /**
   * Another Debian suite, fetched through the lab's private apt configuration (debian-archive.ts);
   * undefined: the machine's own apt sources (bookworm).
   */
  readonly suite?: PrivateSuite;
  /**
   * `image`: the package holds boot/vmlinuz-* and lib/modules/<release> (bookworm, bullseye).
   * `meta`: sid's linux-image-<abi> is a meta package; the kernel is in linux-binary-<abi>
   * (usr/lib/modules/<abi>/vmlinuz) and the modules in linux-modules-<abi>.
   */
  readonly layout: 'image' | 'meta';
  /**
   * When the pinned package has left its suite (sid moves on), the newest package named
   * `linux-image-<abi>` with an abi matching this is taken instead, and the lab says so.
   */
  readonly newest?: RegExp;
  /** Modules the guest loads at boot (names differ between versions: crc32_generic → crc32-cryptoapi). */
  readonly workloadModules: readonly string[];
}

export const KERNELS: readonly KernelSpec[] = [
  {
    id: '5.10',
    aliases: ['5.10-generic', 'bullseye'],
    package: 'linux-image-5.10.0-32-amd64-unsigned',
    suite: 'bullseye',
    layout: 'image',
    workloadModules: ['dummy', 'crc32_generic'],
  },
  {
    id: '6.1-cloud',
    aliases: ['6.1'],
    package: 'linux-image-6.1.0-57-cloud-amd64-unsigned',
    layout: 'image',
    workloadModules: ['dummy', 'crc32_generic'],
  },
  {
    id: '6.12',
    aliases: ['6.12-generic'],
    package: 'linux-image-6.12.117+deb12-amd64-unsigned',
    layout: 'image',
    workloadModules: ['dummy', 'crc32_generic'],
  },
  {
    id: '7.x',
    aliases: ['7', 'sid'],
    package: 'linux-image-7.2.13+deb14-amd64',
    suite: 'sid',
    layout: 'meta',
    newest: /^7\.\d+\.\d+\+deb\d+-amd64$/,
    workloadModules: ['dummy', 'crc32_cryptoapi'],
  },
];

export type KernelId = '5.10' | '6.1-cloud' | '6.12' | '7.x';

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
  /** The lab's pinned package name (the cache key). */
  readonly package: string;
  /** The Debian packages actually downloaded (sid: linux-binary-* + linux-modules-*). */
  readonly packages: readonly string[];
  /** Debian suite they came from ("machine" for the machine's own apt sources). */
  readonly suite: string;
  /** Set when the pinned package had left its suite and a newer one was taken instead. */
  readonly substituted?: string;
  /** Debian package version, e.g. 6.1.192-3. */
  readonly version: string;
  /** Kernel release (`uname -r`), from the lib/modules directory name. */
  readonly release: string;
  /** Extracted package root. */
  readonly root: string;
  readonly vmlinuz: string;
  /** lib/modules/<release> (or usr/lib/modules/<release>) inside root. */
  readonly modulesDir: string;
  /** Modules the guest loads at boot. */
  readonly workloadModules: readonly string[];
  /** True when the cache already held it. */
  readonly cached: boolean;
  /** Time spent downloading + extracting (0 when cached). */
  readonly fetchMs: number;
}

interface KernelMeta {
  package: string;
  packages?: string[];
  suite?: string;
  substituted?: string;
  version: string;
  release: string;
  vmlinuz: string;
  modules_dir?: string;
  debs: string[];
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
/** The machine's own apt configuration: no `-o` overrides. */
const MACHINE_APT = { options: [] } as const;

/**
 * Download (apt-get download <exact packages>) and extract (dpkg-deb -x) a lab kernel into the
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
      const { debs, packages, suite, substituted } = spec.suite
        ? await downloadFromSuite(spec, work, opts, timeoutMs)
        : await downloadFromMachine(spec, work, opts, timeoutMs);
      const root = join(work, 'root');
      for (const deb of debs) {
        opts.log?.(`pmi-lab: extracting ${basename(deb)}`);
        await execChecked('dpkg-deb', ['-x', deb, root], { timeoutMs });
      }
      const meta = await describeExtracted(
        spec,
        root,
        debs.map((d) => basename(d)),
        packages,
        suite,
        substituted,
      );
      await fsp.writeFile(join(work, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
      for (const deb of debs) await fsp.rm(deb, { force: true });
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

interface Downloaded {
  debs: string[];
  packages: string[];
  suite: string;
  substituted?: string;
}

/** The machine's own apt sources (bookworm kernels): plain `apt-get download`. */
async function downloadFromMachine(
  spec: KernelSpec,
  work: string,
  opts: FetchOptions,
  timeoutMs: number,
): Promise<Downloaded> {
  opts.log?.(`pmi-lab: downloading ${spec.package}`);
  let deb: string;
  try {
    [deb] = await downloadPackages(MACHINE_APT, [spec.package], work, timeoutMs);
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
    [deb] = await downloadPackages(MACHINE_APT, [spec.package], work, timeoutMs);
  }
  return { debs: [deb], packages: [spec.package], suite: 'machine' };
}

/**
 * Another suite through the private apt configuration. The pinned package first; when it has
 * left the suite and the spec allows it, the newest matching kernel (logged, and recorded in
 * the cache's meta.json so the lab log and test output can say which kernel ran).
 */
async function downloadFromSuite(
  spec: KernelSpec,
  work: string,
  opts: FetchOptions,
  timeoutMs: number,
): Promise<Downloaded> {
  const suite = spec.suite!;
  const apt = await privateApt(opts.cacheDir);
  await updatePrivateApt(apt, suite);
  let image = spec.package;
  let substituted: string | undefined;
  if ((await candidateVersion(apt, image)) === undefined) {
    // A stale list may not know a package that the suite still has, or vice versa: refresh once.
    await updatePrivateApt(apt, suite, true);
  }
  if ((await candidateVersion(apt, image)) === undefined) {
    if (!spec.newest) {
      throw labError(`${spec.package} is no longer in Debian ${suite} at ${apt.mirror}`, {
        package: spec.package,
        suite,
      });
    }
    const newest = newestKernelAbi(await packageNames(apt, 'linux-image-'), spec.newest);
    if (newest === undefined) {
      throw labError(
        `${spec.package} has left Debian ${suite} and no kernel matching ${String(spec.newest)} is there`,
        {
          package: spec.package,
          suite,
        },
      );
    }
    image = `linux-image-${newest}`;
    substituted = `${spec.package} has left Debian ${suite}; using the newest there, ${image}`;
    opts.log?.(`pmi-lab: ${substituted}`);
  }
  const abi = image.slice('linux-image-'.length).replace(/-unsigned$/, '');
  const packages = spec.layout === 'meta' ? [`linux-binary-${abi}`, `linux-modules-${abi}`] : [image];
  opts.log?.(`pmi-lab: downloading ${packages.join(' ')} (Debian ${suite}, ${apt.mirror})`);
  const debs = await downloadPackages(apt, packages, work, timeoutMs);
  return { debs, packages, suite, substituted };
}

/** The newest kernel ABI (`7.2.13+deb14-amd64`) among `linux-image-*` package names matching `pattern`. */
export function newestKernelAbi(names: readonly string[], pattern: RegExp): string | undefined {
  return names
    .filter((n) => n.startsWith('linux-image-'))
    .map((n) => n.slice('linux-image-'.length))
    .filter((abi) => pattern.test(abi))
    .sort(compareKernelVersions)
    .at(-1);
}

/** Where the extracted packages keep the kernel: boot/vmlinuz-* + lib/modules, or usr/lib/modules/<rel>/vmlinuz. */
async function describeExtracted(
  spec: KernelSpec,
  root: string,
  debs: string[],
  packages: string[],
  suite: string,
  substituted: string | undefined,
): Promise<KernelMeta> {
  const ls = (p: string) => fsp.readdir(join(root, p)).catch(() => [] as string[]);
  let modulesBase = 'lib/modules';
  let mods = await ls(modulesBase);
  if (mods.length === 0) {
    modulesBase = 'usr/lib/modules';
    mods = await ls(modulesBase);
  }
  if (mods.length !== 1) {
    throw labError(`${packages.join(' + ')}: not exactly one lib/modules/* or usr/lib/modules/* directory`, {
      package: spec.package,
      modules_dirs: mods,
    });
  }
  const release = mods[0];
  const bootImage = (await ls('boot')).find((f) => f.startsWith('vmlinuz-'));
  const vmlinuz = bootImage ? join('boot', bootImage) : join(modulesBase, release, 'vmlinuz');
  if (!(await exists(join(root, vmlinuz)))) {
    throw labError(`${packages.join(' + ')}: no boot/vmlinuz-* and no ${modulesBase}/${release}/vmlinuz`, {
      package: spec.package,
    });
  }
  // linux-image-6.1.0-57-cloud-amd64-unsigned_6.1.192-3_amd64.deb → 6.1.192-3
  const version = debs[0].split('_')[1] ?? '';
  return {
    package: spec.package,
    packages,
    suite,
    substituted,
    version,
    release,
    vmlinuz,
    modules_dir: join(modulesBase, release),
    debs,
  };
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
    // Caches written before other suites existed hold one bookworm image package.
    packages: meta.packages ?? [spec.package],
    suite: meta.suite ?? 'machine',
    substituted: meta.substituted,
    version: meta.version,
    release: meta.release,
    root,
    vmlinuz,
    modulesDir: join(root, meta.modules_dir ?? join('lib', 'modules', meta.release)),
    workloadModules: spec.workloadModules,
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
