/**
 * Wall-clock time of boot, from the timekeeper: realtime = monotonic + offs_real and
 * boottime = monotonic + offs_boot, so the wall-clock instant of boottime 0 is
 * offs_real − offs_boot (ns since the epoch). A task's start_boottime + that = its start time.
 *
 * The timekeeper lives in `tk_core` (a static `{seqcount_raw_spinlock_t seq; struct timekeeper
 * timekeeper; …}`, named `struct tk_data` in newer kernels) and is copied into `shadow_timekeeper`
 * on older ones. From 6.14 `tk_core` is element TIMEKEEPER_CORE (0) of `timekeeper_data[]`, an array of
 * `struct tk_data` that also holds `shadow_timekeeper`. The offset of `timekeeper` comes from BTF when
 * `tk_data` exists, else it is the size of the seqcount rounded to 8. Each candidate is checked for
 * plausibility (year 2000–2100).
 */
import type { KernelObjects } from '@pmi/kernel';

const MIN_NS = 946_684_800n * 1_000_000_000n; // 2000-01-01
const MAX_NS = 4_102_444_800n * 1_000_000_000n; // 2100-01-01

export interface BootTime {
  /** Boot instant (boottime 0) in ns since the Unix epoch. */
  epochNs: bigint;
  /** Where it came from (symbol + field). */
  source: string;
}

export async function findBootTime(k: KernelObjects): Promise<BootTime | undefined> {
  if (!k.hasType('timekeeper') || !k.hasField('timekeeper', 'offs_real') || !k.hasField('timekeeper', 'offs_boot')) {
    return undefined;
  }
  const candidates: { va: bigint; source: string }[] = [];
  const sym = (name: string): bigint | undefined => {
    try {
      return k.symbol(name);
    } catch {
      return undefined;
    }
  };
  const tkCore = sym('tk_core');
  if (tkCore !== undefined) {
    let off: number | undefined;
    if (k.hasField('tk_data', 'timekeeper')) off = k.btf.fieldOffset('tk_data', 'timekeeper');
    else if (k.hasType('seqcount_raw_spinlock_t')) off = (k.btf.sizeOf('seqcount_raw_spinlock_t') + 7) & ~7;
    if (off !== undefined) candidates.push({ va: tkCore + BigInt(off), source: 'tk_core.timekeeper' });
  }
  const data = sym('timekeeper_data');
  if (data !== undefined && k.hasField('tk_data', 'timekeeper')) {
    const core = k.btf.enumerator('TIMEKEEPER_CORE');
    const at = data + BigInt(Number(core?.value ?? 0) * k.btf.sizeOf('tk_data'));
    candidates.push({
      va: at + BigInt(k.btf.fieldOffset('tk_data', 'timekeeper')),
      source: 'timekeeper_data[TIMEKEEPER_CORE].timekeeper',
    });
    if (k.hasField('tk_data', 'shadow_timekeeper'))
      candidates.push({
        va: at + BigInt(k.btf.fieldOffset('tk_data', 'shadow_timekeeper')),
        source: 'timekeeper_data[TIMEKEEPER_CORE].shadow_timekeeper',
      });
  }
  const shadow = sym('shadow_timekeeper');
  if (shadow !== undefined) candidates.push({ va: shadow, source: 'shadow_timekeeper' });
  const T = k.layout('timekeeper', ['offs_real', 'offs_boot']);
  const views = await k.readStructs(
    candidates.map((c) => c.va),
    T,
  );
  for (let i = 0; i < views.length; i++) {
    const v = views[i];
    if (v instanceof Error) continue;
    const real = BigInt(v.int('offs_real'));
    const boot = BigInt(v.int('offs_boot'));
    const epoch = real - boot;
    if (boot >= 0n && epoch > MIN_NS && epoch < MAX_NS) return { epochNs: epoch, source: candidates[i].source };
  }
  return undefined;
}
