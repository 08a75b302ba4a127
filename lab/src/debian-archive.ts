import { promises as fsp, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheRoot, execProgram, exists, labError } from './util.js';

/**
 * Debian packages from suites the machine's own apt does not name (bullseye, sid), through a
 * private apt configuration under the lab cache. The machine's sources are only read (for the
 * mirror URI), never changed:
 *
 *   apt-get -o Dir::Etc::sourcelist=<cache>/apt/sources.list -o Dir::Etc::sourceparts=-
 *           -o Dir::State::Lists=<cache>/apt/lists -o Dir::Cache=<cache>/apt/cache update|download …
 *
 * The same fetcher serves kernel images, `-dbg` and `linux-headers-*` packages.
 */

/** Suites the private configuration lists. */
export const PRIVATE_SUITES = ['bullseye', 'sid'] as const;
export type PrivateSuite = (typeof PRIVATE_SUITES)[number];

const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
/** Lists older than this are refreshed (sid moves daily; a pinned version may have left it). */
const LISTS_MAX_AGE_MS = 12 * 3600_000;
const APT_TIMEOUT_MS = 10 * 60_000;

/**
 * The Debian mirror the machine's own apt uses: the first `URIs:` (deb822, sources.list.d/*.sources)
 * or `deb URI suite …` line (sources.list) whose suite is not a -security or -updates suite.
 */
export function machineMirror(etcApt = '/etc/apt'): string {
  const candidates: { uri: string; suites: string[] }[] = [];
  const partsDir = join(etcApt, 'sources.list.d');
  let parts: string[] = [];
  try {
    parts = readdirSync(partsDir)
      .filter((f) => f.endsWith('.sources') || f.endsWith('.list'))
      .sort();
  } catch {
    /* no parts dir */
  }
  const files = [join(etcApt, 'sources.list'), ...parts.map((f) => join(partsDir, f))];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) =>
          new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
        if (!field('Types').includes('deb')) continue;
        for (const uri of field('URIs')) candidates.push({ uri, suites: field('Suites') });
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
        if (m) candidates.push({ uri: m[1], suites: [m[2]] });
      }
    }
  }
  const main = candidates.find(
    (c) => c.uri.includes('debian') && c.suites.some((s) => !/-(security|updates|backports)$/.test(s)),
  );
  if (!main) {
    throw labError(`no Debian mirror found in ${etcApt}/sources.list or ${partsDir}/*.sources`, { etc_apt: etcApt });
  }
  return main.uri.replace(/\/+$/, '');
}

export interface PrivateApt {
  readonly dir: string;
  readonly mirror: string;
  /** The `-o …` options that make apt-get/apt-cache use the private configuration. */
  readonly options: readonly string[];
}

/** Write (idempotently) the private configuration under `<cache>/apt`. */
export async function privateApt(cacheDir = cacheRoot(), mirror = machineMirror()): Promise<PrivateApt> {
  const dir = join(cacheDir, 'apt');
  await fsp.mkdir(join(dir, 'lists', 'partial'), { recursive: true });
  await fsp.mkdir(join(dir, 'cache', 'archives', 'partial'), { recursive: true });
  const list = PRIVATE_SUITES.map((s) => `deb [signed-by=${KEYRING}] ${mirror} ${s} main\n`).join('');
  const sourcelist = join(dir, 'sources.list');
  const old = await fsp.readFile(sourcelist, 'utf8').catch(() => '');
  if (old !== list) await fsp.writeFile(sourcelist, list);
  return {
    dir,
    mirror,
    options: [
      '-o',
      `Dir::Etc::sourcelist=${sourcelist}`,
      '-o',
      'Dir::Etc::sourceparts=-',
      '-o',
      `Dir::State::Lists=${join(dir, 'lists')}`,
      '-o',
      `Dir::Cache=${join(dir, 'cache')}`,
    ],
  };
}

/** The lists file apt writes for a suite's Release (InRelease) — present only after a good update. */
function releaseListName(apt: PrivateApt, suite: string): string {
  const host = apt.mirror.replace(/^[a-z]+:\/\//, '').replace(/\//g, '_');
  return join(apt.dir, 'lists', `${host}_dists_${suite}_InRelease`);
}

const updated = new Set<string>();

/**
 * `apt-get update` on the private configuration when its lists are missing or stale (once per
 * process). A suite whose InRelease is missing afterwards is not served by the mirror (bullseye
 * may move to archive.debian.org, which this machine cannot reach): that is an error naming it.
 */
export async function updatePrivateApt(apt: PrivateApt, suite: PrivateSuite, force = false): Promise<void> {
  const rel = releaseListName(apt, suite);
  const st = await fsp.stat(rel).catch(() => undefined);
  const fresh = st !== undefined && Date.now() - st.mtimeMs < LISTS_MAX_AGE_MS;
  if (!force && (fresh || updated.has(apt.dir))) {
    if (!st) throw suiteGone(apt, suite, '');
    return;
  }
  const r = await execProgram('apt-get', [...apt.options, 'update'], { timeoutMs: APT_TIMEOUT_MS });
  updated.add(apt.dir);
  if (!(await exists(rel))) throw suiteGone(apt, suite, r.stderr);
  if (r.code !== 0) {
    // Another suite may have failed; this one has its lists, so go on.
  }
}

function suiteGone(apt: PrivateApt, suite: string, stderr: string) {
  return labError(
    `Debian suite '${suite}' is not served by ${apt.mirror} (no dists/${suite}/InRelease after apt-get update; ` +
      `it may have moved to archive.debian.org, which this machine cannot reach)`,
    { suite, mirror: apt.mirror, stderr: stderr.slice(-2000) },
  );
}

/** The candidate version of a package in the private lists, or undefined when no suite has it. */
export async function candidateVersion(apt: PrivateApt, pkg: string): Promise<string | undefined> {
  const r = await execProgram('apt-cache', [...apt.options, 'policy', pkg], { timeoutMs: 60_000 });
  const m = /Candidate:\s*(\S+)/.exec(r.stdout);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/** Package names in the private lists starting with a prefix. */
export async function packageNames(apt: PrivateApt, prefix: string): Promise<string[]> {
  const r = await execProgram('apt-cache', [...apt.options, 'pkgnames', prefix], { timeoutMs: 60_000 });
  return r.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .sort();
}

/**
 * `apt-get download` of exact package names into dir, through the private configuration (or the
 * machine's own, with no options).
 * Returns the .deb paths in the order asked.
 */
export async function downloadPackages(
  apt: Pick<PrivateApt, 'options'>,
  pkgs: readonly string[],
  dir: string,
  timeoutMs = APT_TIMEOUT_MS,
): Promise<string[]> {
  const r = await execProgram('apt-get', [...apt.options, 'download', ...pkgs], { cwd: dir, timeoutMs });
  const debs = (await fsp.readdir(dir)).filter((f) => f.endsWith('.deb'));
  const out = pkgs.map((p) => debs.find((d) => d.startsWith(`${p}_`)));
  if (r.code !== 0 || out.some((d) => d === undefined)) {
    throw labError(
      `apt-get download ${pkgs.join(' ')} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`,
      { packages: pkgs, stderr: r.stderr.slice(-2000) },
    );
  }
  return out.map((d) => join(dir, d!));
}

/** Compare Debian-ish kernel versions like `7.2.13+deb14` numerically, field by field. */
export function compareKernelVersions(a: string, b: string): number {
  const na = a
    .split(/[^0-9]+/)
    .filter(Boolean)
    .map(Number);
  const nb = b
    .split(/[^0-9]+/)
    .filter(Boolean)
    .map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? -1) - (nb[i] ?? -1);
    if (d !== 0) return d;
  }
  return 0;
}
