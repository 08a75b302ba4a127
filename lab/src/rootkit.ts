/**
 * A TEST-ONLY "rootkit-style" kernel module for the lab (lab/rootkit/pmi_rootkit.c), built at test
 * time against the lab kernels' own Debian headers and loaded into a running lab guest, so the
 * integrity checks can prove that pmi, reading guest memory from outside, sees real in-kernel
 * tampering: a redirected sys_call_table entry, a task unlinked from the task list, a module
 * unlinked from the module list, a cred edited to uid 0. See lab/rootkit/README.md.
 *
 *   fetchKernelHeaders(kernel)   linux-headers-<abi> + -common + linux-kbuild-<x.y>, downloaded with
 *                                apt-get download, extracted with dpkg-deb -x into the lab cache
 *                                (never installed on the host), links fixed so `make -C … M=…` works
 *   buildRootkitModule(kernel)   make … modules with Debian's gcc-12, strip --strip-debug, vermagic
 *                                checked against the kernel's own modules; cached by ABI + source hash
 *   loadRootkit(vm, ko, params)  base64 in chunks over the command channel, sha256 checked, insmod
 *   parseRootkitLog(dmesg)       what the module says it did (pr_info "pmi_rootkit: …"), addresses as bigint
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PmiError } from '@pmi/core';
import type { RunResult } from './channel.js';
import { downloadPackages } from './debian-archive.js';
import { WORKLOAD } from './initramfs.js';
import { acquireLock, fetchKernel, kernelModules, readModinfo, resolveKernel } from './kernels.js';
import { cacheRoot, execChecked, execProgram, exists, labError, ORIGIN, randomTag, rmQuiet, sleep } from './util.js';
import type { LabVm } from './vm.js';

/** lab/rootkit/: pmi_rootkit.c and Kbuild (the same relative path from src/ and dist/). */
export const ROOTKIT_SOURCE_DIR = fileURLToPath(new URL('../rootkit/', import.meta.url));
export const ROOTKIT_MODULE_NAME = 'pmi_rootkit';
const SOURCE_FILES = ['pmi_rootkit.c', 'Kbuild'] as const;
/** Bumped when the build recipe (make variables, strip) changes, so cached modules are rebuilt. */
const BUILD_RECIPE = 'v1: make modules CONFIG_DEBUG_INFO_BTF_MODULES= ; strip --strip-debug';
/** Bumped when the extracted-headers layout or link fixes change. */
const HEADERS_LAYOUT = 1;

/** Lab kernels whose headers can build modules on this host (Debian bookworm: gcc-12). */
const HEADERS_UNSUPPORTED: Record<string, string> = {
  '5.10':
    "its linux-headers-5.10.0-32-amd64 (bullseye) build with gcc-10 (depends on linux-compiler-gcc-10-x86), a compiler Debian bookworm, the lab host's release, does not have; modules must be built with the kernel's own compiler",
  '7.x':
    "its linux-headers-7.x (sid) build with gcc-16 (depends on gcc-16-for-host) and sid's linux-kbuild binaries need sid's C library; Debian bookworm, the lab host's release, has neither; modules must be built with the kernel's own compiler",
};

/** Thrown for lab kernels whose headers this host cannot build modules with (5.10, 7.x). */
export class KernelHeadersUnsupportedError extends PmiError {
  readonly kernel: string;
  readonly reason: string;
  constructor(kernel: string, reason: string) {
    super('E_LAB', ORIGIN, `cannot build kernel modules for lab kernel ${kernel}: ${reason}`, {
      kernel,
      reason,
      supported: ['6.1-cloud', '6.12'],
    });
    this.name = 'KernelHeadersUnsupportedError';
    this.kernel = kernel;
    this.reason = reason;
  }
}

/** Extracted Debian kernel headers in the lab cache. */
export interface KernelHeaders {
  /** Lab kernel id (6.1-cloud, 6.12). */
  readonly kernel: string;
  /** Kernel ABI / `uname -r`, e.g. 6.1.0-57-cloud-amd64. */
  readonly abi: string;
  /** The Debian packages extracted: linux-headers-<abi>, linux-headers-<…>-common, linux-kbuild-<…>. */
  readonly packages: readonly string[];
  /** Debian version of linux-headers-<abi> (equal to the image's, e.g. 6.1.192-3). */
  readonly version: string;
  /** Debian version of linux-kbuild-<…> (may differ when the archive moved on; the build still works). */
  readonly kbuildVersion: string;
  /** The extracted root (usr/src, usr/lib/linux-kbuild-*, lib/modules/<abi>/build). */
  readonly root: string;
  /** `make -C <dir> M=<builddir> modules` works here: usr/src/linux-headers-<abi>. */
  readonly dir: string;
  /** True when the cache already held it. */
  readonly cached: boolean;
  /** Time to download + extract (0 when cached). */
  readonly downloadMs: number;
  readonly extractMs: number;
}

export interface RootkitBuildOptions {
  cacheDir?: string;
  timeoutMs?: number;
  log?: (msg: string) => void;
}

interface HeadersMeta {
  layout: number;
  kernel: string;
  abi: string;
  packages: string[];
  debs: string[];
  version: string;
  kbuild_version: string;
  headers_dir: string;
  download_ms: number;
  extract_ms: number;
}

function supportedSpec(kernelId: string) {
  const spec = resolveKernel(kernelId);
  const why = HEADERS_UNSUPPORTED[spec.id];
  if (why !== undefined) throw new KernelHeadersUnsupportedError(spec.id, why);
  if (spec.suite !== undefined || spec.layout !== 'image' || !spec.package.endsWith('-unsigned')) {
    throw new KernelHeadersUnsupportedError(spec.id, `no bookworm headers recipe for ${spec.package}`);
  }
  return spec;
}

/** `linux-image-6.1.0-57-cloud-amd64-unsigned` → `6.1.0-57-cloud-amd64`. */
export function kernelAbi(kernelId: string): string {
  return resolveKernel(kernelId)
    .package.replace(/^linux-image-/, '')
    .replace(/-unsigned$/, '');
}

let aptUpdated = false;

/** The `linux-headers-*` and `linux-kbuild-*` packages linux-headers-<abi> depends on (apt-cache depends). */
async function headerDependencies(headersPkg: string, timeoutMs: number): Promise<string[]> {
  const depends = async (): Promise<string[]> => {
    const r = await execProgram('apt-cache', ['depends', headersPkg], { timeoutMs: 60_000 });
    if (r.code !== 0) return [];
    return r.stdout
      .split('\n')
      .map((l) => /^\s*\|?Depends:\s*(\S+)/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined && /^linux-(headers-.*-common|kbuild-)/.test(n));
  };
  let deps = await depends();
  if (deps.length < 2 && !aptUpdated) {
    await execChecked('apt-get', ['update'], { timeoutMs: Math.min(timeoutMs, 10 * 60_000) });
    aptUpdated = true;
    deps = await depends();
  }
  const common = deps.find((d) => d.startsWith('linux-headers-'));
  const kbuild = deps.find((d) => d.startsWith('linux-kbuild-'));
  if (!common || !kbuild) {
    throw labError(`apt-cache depends ${headersPkg}: no linux-headers-*-common and linux-kbuild-* dependency`, {
      package: headersPkg,
      depends: deps,
    });
  }
  return [common, kbuild];
}

/**
 * Download (apt-get download, the machine's bookworm sources) and extract (dpkg-deb -x) the headers
 * needed to build out-of-tree modules for a lab kernel: linux-headers-<abi>, its -common package and
 * linux-kbuild-<…>, into `<cache>/headers/<abi>/root`, once (published by an atomic rename under a
 * lock, like the kernels). Never installed on the host (they depend on the image package). The
 * flavour Makefile's absolute `include /usr/src/…-common/Makefile` becomes relative, and so do
 * lib/modules/<abi>/{build,source}, so `make -C <dir> M=<builddir> modules` works from the cache.
 * 5.10 and 7.x throw KernelHeadersUnsupportedError.
 */
export async function fetchKernelHeaders(kernelId: string, opts: RootkitBuildOptions = {}): Promise<KernelHeaders> {
  const spec = supportedSpec(kernelId);
  const abi = kernelAbi(spec.id);
  const base = join(opts.cacheDir ?? cacheRoot(), 'headers');
  const finalDir = join(base, abi);
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  const hit = await readHeaders(spec.id, finalDir);
  if (hit) return hit;
  await fsp.mkdir(base, { recursive: true });
  const release = await acquireLock(join(base, `${abi}.lock`), timeoutMs);
  try {
    const again = await readHeaders(spec.id, finalDir);
    if (again) return again;
    const work = join(base, `.tmp-${abi}-${process.pid}-${randomTag()}`);
    await fsp.mkdir(work, { recursive: true });
    try {
      const t0 = Date.now();
      const headersPkg = `linux-headers-${abi}`;
      const packages = [headersPkg, ...(await headerDependencies(headersPkg, timeoutMs))];
      opts.log?.(`pmi-lab: downloading ${packages.join(' ')}`);
      const debs = await downloadPackages({ options: [] }, packages, work, timeoutMs);
      const downloadMs = Date.now() - t0;
      const t1 = Date.now();
      const root = join(work, 'root');
      for (const deb of debs) {
        opts.log?.(`pmi-lab: extracting ${basename(deb)}`);
        await execChecked('dpkg-deb', ['-x', deb, root], { timeoutMs });
      }
      await fixHeaderLinks(root, abi);
      const extractMs = Date.now() - t1;
      const versionOf = (deb: string) => basename(deb).split('_')[1] ?? '';
      const meta: HeadersMeta = {
        layout: HEADERS_LAYOUT,
        kernel: spec.id,
        abi,
        packages,
        debs: debs.map((d) => basename(d)),
        version: versionOf(debs[0]),
        kbuild_version: versionOf(debs[2]),
        headers_dir: join('usr', 'src', `linux-headers-${abi}`),
        download_ms: downloadMs,
        extract_ms: extractMs,
      };
      if (meta.kbuild_version !== meta.version) {
        opts.log?.(`pmi-lab: note: ${packages[2]} is ${meta.kbuild_version}, the headers ${meta.version}`);
      }
      await fsp.writeFile(join(work, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
      for (const deb of debs) await fsp.rm(deb, { force: true });
      await rmQuiet(finalDir); // a stale layout
      await fsp.rename(work, finalDir);
    } finally {
      await rmQuiet(work);
    }
    const done = await readHeaders(spec.id, finalDir, false);
    if (!done) throw labError(`kernel headers cache for ${abi} is incomplete after extraction`, { dir: finalDir });
    return done;
  } finally {
    await release();
  }
}

/**
 * Debian's headers assume /usr/src: the flavour Makefile is `include /usr/src/linux-headers-<…>-common/Makefile`
 * and lib/modules/<abi>/{build,source} are absolute links. Make them relative to the extracted root
 * (scripts/ and tools/ already link relatively into usr/lib/linux-kbuild-<…>).
 */
async function fixHeaderLinks(root: string, abi: string): Promise<void> {
  const src = join(root, 'usr', 'src');
  const flavour = join(src, `linux-headers-${abi}`);
  const makefile = join(flavour, 'Makefile');
  const text = await fsp.readFile(makefile, 'utf8');
  const fixed = text.replace(
    /^include \/usr\/src\/([^/\s]+)\/Makefile$/m,
    'include $(dir $(lastword $(MAKEFILE_LIST)))../$1/Makefile',
  );
  if (fixed === text) throw labError(`unexpected ${makefile}: no 'include /usr/src/…/Makefile'`, { text });
  await fsp.writeFile(makefile, fixed);
  const modDir = join(root, 'lib', 'modules', abi);
  for (const name of ['build', 'source']) {
    const link = join(modDir, name);
    const target = await fsp.readlink(link).catch(() => undefined);
    if (target?.startsWith('/')) {
      await fsp.rm(link);
      await fsp.symlink(join('..', '..', '..', target.slice(1)), link);
    }
  }
  for (const p of [join(flavour, 'scripts', 'mod', 'modpost'), join(flavour, 'include', 'config', 'auto.conf')]) {
    if (!(await exists(p))) throw labError(`extracted headers lack ${p}`, { path: p });
  }
}

async function readHeaders(kernel: string, dir: string, cached = true): Promise<KernelHeaders | undefined> {
  let meta: HeadersMeta;
  try {
    meta = JSON.parse(await fsp.readFile(join(dir, 'meta.json'), 'utf8')) as HeadersMeta;
  } catch {
    return undefined;
  }
  if (meta.layout !== HEADERS_LAYOUT) return undefined;
  const root = join(dir, 'root');
  const hdir = join(root, meta.headers_dir);
  if (!(await exists(join(hdir, 'Makefile')))) return undefined;
  return {
    kernel,
    abi: meta.abi,
    packages: meta.packages,
    version: meta.version,
    kbuildVersion: meta.kbuild_version,
    root,
    dir: hdir,
    cached,
    downloadMs: cached ? 0 : meta.download_ms,
    extractMs: cached ? 0 : meta.extract_ms,
  };
}

/** What a build produced (`build.json` beside the .ko). */
export interface RootkitBuild {
  kernel: string;
  abi: string;
  ko: string;
  vermagic: string;
  bytes: number;
  /** sha256 of the stripped .ko. */
  sha256: string;
  source_sha256: string;
  headers_version: string;
  compiler: string;
  build_ms: number;
}

async function sourceHash(): Promise<string> {
  const h = createHash('sha256');
  for (const f of SOURCE_FILES) {
    h.update(`${f}\0`);
    h.update(await fsp.readFile(join(ROOTKIT_SOURCE_DIR, f)));
  }
  return h.digest('hex');
}

/**
 * Build lab/rootkit/pmi_rootkit.c for a lab kernel (6.1-cloud, 6.12) with Debian's gcc-12 against
 * its headers (fetchKernelHeaders), strip debug info, and check its vermagic against the kernel
 * package's own modules. Cached in `<cache>/rootkit/<abi>-<hash>/` (the hash covers the sources,
 * the headers' version, the compiler and the recipe): a second call returns at once. Returns the
 * path of pmi_rootkit.ko (its build.json sidecar holds size, vermagic, sha256, build time).
 */
export async function buildRootkitModule(kernelId: string, opts: RootkitBuildOptions = {}): Promise<string> {
  const spec = supportedSpec(kernelId);
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  const headers = await fetchKernelHeaders(spec.id, opts);
  const kernel = await fetchKernel(spec.id, { cacheDir: opts.cacheDir, log: opts.log, timeoutMs });
  if (kernel.version !== headers.version) {
    throw labError(
      `headers ${headers.packages[0]} ${headers.version} do not match the lab kernel ${kernel.package} ${kernel.version}`,
      { headers: headers.version, kernel: kernel.version },
    );
  }
  const cc = await execChecked('gcc-12', ['--version'], { timeoutMs: 10_000 }).catch((e) => {
    throw labError(`gcc-12 is needed to build kernel modules for ${spec.id} (Debian: apt-get install gcc make)`, {}, e);
  });
  const compiler = cc.stdout.split('\n')[0].trim();
  const srcHash = await sourceHash();
  const key = createHash('sha256')
    .update(`${BUILD_RECIPE}\0${headers.abi}\0${headers.version}\0${headers.kbuildVersion}\0${compiler}\0${srcHash}`)
    .digest('hex')
    .slice(0, 16);
  const base = join(opts.cacheDir ?? cacheRoot(), 'rootkit');
  const outDir = join(base, `${headers.abi}-${key}`);
  const ko = join(outDir, `${ROOTKIT_MODULE_NAME}.ko`);
  if (await exists(join(outDir, 'build.json'))) return ko;
  await fsp.mkdir(base, { recursive: true });
  const release = await acquireLock(join(base, `${headers.abi}-${key}.lock`), timeoutMs);
  try {
    if (await exists(join(outDir, 'build.json'))) return ko;
    const work = join(base, `.tmp-${headers.abi}-${process.pid}-${randomTag()}`);
    await fsp.mkdir(work, { recursive: true });
    try {
      for (const f of SOURCE_FILES) await fsp.copyFile(join(ROOTKIT_SOURCE_DIR, f), join(work, f));
      const t0 = Date.now();
      opts.log?.(`pmi-lab: building ${ROOTKIT_MODULE_NAME}.ko for ${headers.abi} (${compiler})`);
      // No BTF for the module: pahole is not needed (and the .ko stays small).
      await execChecked('make', ['-C', headers.dir, `M=${work}`, 'CONFIG_DEBUG_INFO_BTF_MODULES=', 'modules'], {
        timeoutMs,
        env: { ...process.env, LC_ALL: 'C' },
      }).catch((e) => {
        throw labError(
          `building ${ROOTKIT_MODULE_NAME}.ko for ${headers.abi} failed (needs gcc-12 and make)`,
          { dir: work },
          e,
        );
      });
      const built = join(work, `${ROOTKIT_MODULE_NAME}.ko`);
      const stripped = join(work, `${ROOTKIT_MODULE_NAME}.stripped.ko`);
      await execChecked('strip', ['--strip-debug', '-o', stripped, built], { timeoutMs: 60_000 });
      const buildMs = Date.now() - t0;
      const data = await fsp.readFile(stripped);
      const vermagic = readModinfo(data, 'vermagic');
      const [ref] = await kernelModules(kernel, [kernel.workloadModules[0]]);
      const want = readModinfo(await fsp.readFile(ref.path), 'vermagic');
      if (!vermagic || vermagic !== want) {
        throw labError(`${ROOTKIT_MODULE_NAME}.ko vermagic '${vermagic}' differs from the kernel's '${want}'`, {
          vermagic,
          expected: want,
          reference: ref.path,
        });
      }
      const info: RootkitBuild = {
        kernel: spec.id,
        abi: headers.abi,
        ko,
        vermagic,
        bytes: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        source_sha256: srcHash,
        headers_version: headers.version,
        compiler,
        build_ms: buildMs,
      };
      const pub = join(work, 'out');
      await fsp.mkdir(pub);
      await fsp.copyFile(stripped, join(pub, `${ROOTKIT_MODULE_NAME}.ko`));
      await fsp.writeFile(join(pub, 'build.json'), JSON.stringify(info, null, 2) + '\n');
      await rmQuiet(outDir);
      await fsp.rename(pub, outDir);
      opts.log?.(
        `pmi-lab: built ${ROOTKIT_MODULE_NAME}.ko for ${headers.abi} in ${buildMs} ms: ${data.length} bytes, vermagic '${vermagic}'`,
      );
    } finally {
      await rmQuiet(work);
    }
    return ko;
  } finally {
    await release();
  }
}

/** The build.json beside a module built by buildRootkitModule. */
export async function rootkitBuildInfo(ko: string): Promise<RootkitBuild> {
  return JSON.parse(await fsp.readFile(join(ko, '..', 'build.json'), 'utf8')) as RootkitBuild;
}

/* ---------------- loading into a running lab guest ---------------- */

export interface RootkitParams {
  /** pid of a thread-group leader to unlink from the task list (0/undefined: none). */
  hidePid?: number;
  /** pid whose cred gets uid/gid 0, edited in place (0/undefined: none). */
  rootPid?: number;
  /** sys_call_table entry to redirect (default: the module's, __NR_getppid = 110; -1: none). */
  syscallNr?: number;
  /** Unlink the module from the module list (default: the module's, true). */
  hideSelf?: boolean;
}

export interface RootkitLoadResult {
  /** Where the .ko was written in the guest. */
  guestPath: string;
  /** insmod's result (exit code 0). */
  insmod: RunResult;
  /** The kernel log (`dmesg`) right after insmod. */
  dmesg: string;
  /** parseRootkitLog(dmesg). */
  log: RootkitLog;
  /** Guest checks before loading. */
  guest: { lockdown: string; sig_enforce: string; modules_disabled: string; tainted_before: number };
  transferMs: number;
  insmodMs: number;
}

/** Raw bytes per transfer command (base64 → ~87 KB of channel payload, under its 256 KB limit). */
const CHUNK_BYTES = 48 * 1024;

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The insmod argument list for the params (only those given). */
export function rootkitInsmodArgs(params: RootkitParams): string[] {
  const args: string[] = [];
  const int = (name: string, v: number | undefined) => {
    if (v === undefined) return;
    if (!Number.isSafeInteger(v)) throw labError(`${name} must be an integer (got ${v})`, { [name]: v });
    args.push(`${name}=${v}`);
  };
  int('hide_pid', params.hidePid);
  int('root_pid', params.rootPid);
  int('syscall_nr', params.syscallNr);
  if (params.hideSelf !== undefined) args.push(`hide_self=${params.hideSelf ? 1 : 0}`);
  return args;
}

/**
 * Copy a module into a running lab guest (base64 in chunks over the command channel, sha256
 * checked), check the guest can load it (busybox insmod present, modules not disabled, no
 * lockdown, module.sig_enforce off: Debian kernels load unsigned modules and taint), and insmod it
 * with the params. Refuses when /sys/module/pmi_rootkit already exists (a hidden module cannot be
 * found by name, so a second one would collide only in sysfs). Returns what the module logged.
 */
export async function loadRootkit(vm: LabVm, ko: string, params: RootkitParams = {}): Promise<RootkitLoadResult> {
  const data = await fsp.readFile(ko);
  const name = basename(ko);
  const guestPath = `/tmp/${name}`;
  const args = rootkitInsmodArgs(params);
  const check = await vm.run(
    [
      'command -v insmod >/dev/null && echo insmod=yes || echo insmod=no',
      '[ -d /sys/kernel/security ] && ! [ -e /sys/kernel/security/lockdown ] && mount -t securityfs securityfs /sys/kernel/security 2>/dev/null',
      'echo "lockdown=$(cat /sys/kernel/security/lockdown 2>/dev/null || echo unknown)"',
      'echo "sig_enforce=$(cat /sys/module/module/parameters/sig_enforce 2>/dev/null || echo unknown)"',
      'echo "modules_disabled=$(cat /proc/sys/kernel/modules_disabled)"',
      'echo "tainted=$(cat /proc/sys/kernel/tainted)"',
      `[ -e /sys/module/${ROOTKIT_MODULE_NAME} ] && echo present=yes || echo present=no`,
    ].join('\n'),
  );
  const kv = Object.fromEntries(
    check.stdout
      .split('\n')
      .map((l) => /^(\w+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
  const guest = {
    lockdown: kv.lockdown ?? 'unknown',
    sig_enforce: kv.sig_enforce ?? 'unknown',
    modules_disabled: kv.modules_disabled ?? 'unknown',
    tainted_before: Number(kv.tainted ?? NaN),
  };
  const refuse = (why: string) => labError(`cannot load ${name} into ${vm.name}: ${why}`, { name: vm.name, ...guest });
  if (kv.insmod !== 'yes') throw refuse('the guest has no insmod');
  if (guest.modules_disabled !== '0') throw refuse('kernel.modules_disabled is set');
  if (guest.sig_enforce === 'Y') throw refuse('module signatures are enforced (module.sig_enforce=Y)');
  if (/\[(integrity|confidentiality)\]/.test(guest.lockdown))
    throw refuse(`the kernel is locked down (${guest.lockdown})`);
  if (kv.present === 'yes') throw refuse(`/sys/module/${ROOTKIT_MODULE_NAME} exists: already loaded`);

  const t0 = Date.now();
  const b64 = `${guestPath}.b64`;
  await vm.run(`rm -f ${shq(b64)} ${shq(guestPath)}`);
  for (let off = 0; off < data.length; off += CHUNK_BYTES) {
    const chunk = data.subarray(off, off + CHUNK_BYTES).toString('base64');
    const r = await vm.run(`printf '%s\\n' '${chunk}' >> ${shq(b64)}`, { timeoutMs: 60_000 });
    if (r.exitCode !== 0) throw refuse(`writing ${b64} failed: ${r.stderr.trim()}`);
  }
  const sha = createHash('sha256').update(data).digest('hex');
  const put = await vm.run(
    `base64 -d ${shq(b64)} > ${shq(guestPath)} && rm -f ${shq(b64)} && sha256sum ${shq(guestPath)}`,
  );
  if (put.exitCode !== 0 || put.stdout.trim().split(/\s+/)[0] !== sha) {
    throw refuse(`the copy in the guest does not match (sha256 ${put.stdout.trim()} vs ${sha}; ${put.stderr.trim()})`);
  }
  const transferMs = Date.now() - t0;

  const t1 = Date.now();
  const insmod = await vm.run(`insmod ${shq(guestPath)} ${args.map(shq).join(' ')}`, { timeoutMs: 60_000 });
  const insmodMs = Date.now() - t1;
  const dmesg = (await vm.run('dmesg')).stdout;
  const log = parseRootkitLog(dmesg);
  if (insmod.exitCode !== 0) {
    // busybox insmod words init's errno oddly (-ESRCH: "wrong symbol version"): the module's own pr_err says why
    const said = log.errors.length > 0 ? `; the module said: ${log.errors.join('; ')}` : '';
    throw labError(
      `insmod ${name} ${args.join(' ')} failed in ${vm.name} (exit ${insmod.exitCode}): ${insmod.stderr.trim()}${said}`,
      {
        name: vm.name,
        stderr: insmod.stderr,
        module_errors: log.errors,
        dmesg_tail: dmesg.split('\n').slice(-20).join('\n'),
      },
    );
  }
  return { guestPath, insmod, dmesg, log, guest, transferMs, insmodMs };
}

/**
 * Two harmless processes for the module to act on, started in the guest: `sleep 100000` as root (to
 * hide) and `sleep 100001` as the lab's non-root user (WORKLOAD.userSleeper.user, uid 1000; to raise
 * to uid 0). Waits until the second one runs as that user.
 */
export async function startRootkitVictims(vm: LabVm): Promise<{ hidePid: number; rootPid: number }> {
  const user = WORKLOAD.userSleeper.user;
  const r = await vm.run(
    [
      'sleep 100000 </dev/null >/dev/null 2>&1 &',
      'echo hide=$!',
      `su -s /bin/sh ${user} -c 'exec sleep 100001' </dev/null >/dev/null 2>&1 &`,
      'echo root=$!',
    ].join('\n'),
  );
  const hidePid = Number(/hide=(\d+)/.exec(r.stdout)?.[1]);
  const rootPid = Number(/root=(\d+)/.exec(r.stdout)?.[1]);
  if (!(hidePid > 0) || !(rootPid > 0)) throw labError(`cannot start the victims in ${vm.name}: ${r.stderr}`, {});
  for (let i = 0; i < 50; i++) {
    const st = await vm.run(`cat /proc/${rootPid}/status 2>/dev/null; readlink /proc/${rootPid}/exe`);
    const uid = /^Uid:\s+(\d+)/m.exec(st.stdout)?.[1];
    if (uid === String(WORKLOAD.userSleeper.uid) && /\/busybox$/m.test(st.stdout) && /^Name:\s+sleep$/m.test(st.stdout))
      return { hidePid, rootPid };
    await sleep(200);
  }
  throw labError(`victim ${rootPid} in ${vm.name} did not become 'sleep' as ${user}`, { hidePid, rootPid });
}

/* ---------------- what the module said ---------------- */

export interface RootkitLog {
  /** `pmi_rootkit: TEST-ONLY module loading: …` (the last load in the text). */
  loaded?: { module: bigint; name: string; init: bigint; hook: bigint };
  kallsyms?: { kallsymsLookupName: bigint; tasklistLock: bigint; moduleMutex: bigint };
  /** sys_call_table[nr] at `entry` changed from `old` to `new` (written through `alias`; `now` read back). */
  syscall?: { nr: number; table: bigint; entry: bigint; old: bigint; new: bigint; alias: bigint; now: bigint };
  /** The task unlinked from init_task.tasks: its list node and its former neighbours. */
  hiddenTask?: {
    pid: number;
    comm: string;
    task: bigint;
    tasks: bigint;
    prev: bigint;
    next: bigint;
    initTask: bigint;
  };
  /** The task whose cred was edited to uid/gid 0. */
  rootTask?: {
    pid: number;
    comm: string;
    task: bigint;
    realCred: bigint;
    cred: bigint;
    oldUid: number;
    oldEuid: number;
    oldGid: number;
  };
  /** The module unlinked from the module list (its sysfs kobject stays). */
  hiddenModule?: { module: bigint; list: bigint; prev: bigint; next: bigint; kobj: bigint };
  /** The `done` line was seen (every requested action succeeded). */
  done: boolean;
  /** pr_err lines of the module. */
  errors: string[];
  /** Every `pmi_rootkit: …` message of that load, without the timestamp. */
  lines: string[];
}

/** Parse the module's kernel-log lines (dmesg text, or a serial console log); the last load wins. */
export function parseRootkitLog(dmesgText: string): RootkitLog {
  const all = dmesgText
    .replace(/\r/g, '')
    .split('\n')
    .map((l) => /pmi_rootkit: (.*)$/.exec(l)?.[1]?.trimEnd())
    .filter((l): l is string => l !== undefined);
  const start = all.map((l) => l.startsWith('TEST-ONLY module loading')).lastIndexOf(true);
  const lines = start >= 0 ? all.slice(start) : all;
  const out: RootkitLog = { done: false, errors: [], lines };
  for (const line of lines) {
    const kv = (key: string): string | undefined => new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(line)?.[1];
    const addr = (key: string): bigint => {
      const v = kv(key);
      if (v === undefined || !/^(0x)?[0-9a-f]+$/i.test(v)) return -1n;
      return BigInt(v.startsWith('0x') ? v : `0x${v}`);
    };
    const num = (key: string, v = kv(key)): number => (v === undefined ? NaN : Number(v));
    const comm = /comm=(.*?) task=/.exec(line)?.[1] ?? '';
    const from = (key: string): number => num(key, /^(\d+)->/.exec(kv(key) ?? '')?.[1]);
    if (line.startsWith('TEST-ONLY module loading:')) {
      out.loaded = { module: addr('module'), name: kv('name') ?? '', init: addr('init'), hook: addr('hook') };
    } else if (line.startsWith('kallsyms_lookup_name=')) {
      out.kallsyms = {
        kallsymsLookupName: addr('kallsyms_lookup_name'),
        tasklistLock: addr('tasklist_lock'),
        moduleMutex: addr('module_mutex'),
      };
    } else if (line.startsWith('syscall nr=')) {
      out.syscall = {
        nr: num('nr'),
        table: addr('sys_call_table'),
        entry: addr('entry'),
        old: addr('old'),
        new: addr('new'),
        alias: addr('alias'),
        now: addr('now'),
      };
    } else if (line.startsWith('hide_pid pid=')) {
      out.hiddenTask = {
        pid: num('pid'),
        comm,
        task: addr('task'),
        tasks: addr('tasks'),
        prev: addr('prev'),
        next: addr('next'),
        initTask: addr('init_task'),
      };
    } else if (line.startsWith('root_pid pid=')) {
      out.rootTask = {
        pid: num('pid'),
        comm,
        task: addr('task'),
        realCred: addr('real_cred'),
        cred: addr('cred'),
        oldUid: from('uid'),
        oldEuid: from('euid'),
        oldGid: from('gid'),
      };
    } else if (line.startsWith('hide_self module=')) {
      out.hiddenModule = {
        module: addr('module'),
        list: addr('list'),
        prev: addr('prev'),
        next: addr('next'),
        kobj: addr('kobj'),
      };
    } else if (line.startsWith('done syscall_nr=')) {
      out.done = true;
    } else if (!line.startsWith('unloaded ')) {
      out.errors.push(line);
    }
  }
  return out;
}
