/**
 * The live monitor behind `pmi watch`.
 *
 * 1. Discover the kernel and take a baseline: a first pass of every check (or the given baseline
 *    file). Tampering already present is alerted at once.
 * 2. Every interval, read the *critical set* in ONE batched read: the byte regions the light checks
 *    returned (syscall tables, syscall dispatchers, IDT) plus two sentinels — `panic_cpu` (a panic is
 *    in progress when it is not −1) and `jiffies_64` (goes backwards on a reboot; stops on a hang).
 *    Compare each region with its reference copy (Buffer.compare: native, no allocation). A changed
 *    region makes its check run at once against the baseline; its new findings become alerts with
 *    `detected_after_ms` = time from the last clean read of that region to the read that saw it.
 * 3. Spread the heavy checks over time within a read budget (`budget` bytes/s): kernel text and
 *    rodata are hashed a slice per tick (a full cycle takes text size ÷ budget), and the cross-view
 *    checks run every `heavyEveryMs` when the budget allows.
 * 4. Survive the target: a failed read sets the state `unreachable` and polling keeps retrying; a
 *    panic sets `panicked` (polling continues: a panicked kernel's memory is still readable); a
 *    reboot (jiffies backwards, or the banner gone from its place) re-discovers the kernel, takes a
 *    new baseline and says so. No exception escapes the loop: bad memory is a finding or a warning.
 */
import type { PhysicalMemory } from '@pmi/core';
import { discoverKernel, type DiscoveredKernel } from '@pmi/kernel';
import type { Alert, AlertSink, Finding, MonitorEvent, TargetState } from '../model.js';
import type { Check, CheckContext, CheckOutcome, PolledRegion } from '../checks/types.js';
import { checkContext, runCheck, runChecks } from '../run/run-checks.js';
import { baselineMismatch, type Baseline } from '../baseline/baseline.js';
import {
  compareDigests,
  siteFinding,
  findPatchSites,
  hashPages,
  readPages,
  textLayout,
  type PatchSite,
  type TextBaseline,
  type TextLayout,
} from '../checks/text.js';
import { fromBase64, regionOf } from '../checks/kernel-memory.js';

/** Metric hooks (the Prometheus exporter implements them; all optional). */
export interface WatchMetrics {
  poll?(achievedIntervalMs: number, readLatencyMs: number, bytes: number): void;
  check?(id: string): void;
  alert?(a: Alert): void;
  event?(e: MonitorEvent): void;
  state?(s: TargetState, release?: string): void;
  textCycle?(seconds: number): void;
}

export interface WatchOptions {
  mem: PhysicalMemory;
  target: string;
  checks: readonly Check[];
  /** Poll interval of the critical set (ms, fractions allowed; default 10). */
  intervalMs?: number;
  /** Read budget for the heavy checks, bytes per second (default 32 MiB/s). */
  budgetBytesPerSec?: number;
  /** How often the heavy non-text checks run (ms, default 5000). */
  heavyEveryMs?: number;
  baseline?: Baseline;
  sinks: readonly AlertSink[];
  metrics?: WatchMetrics;
  /** Discovery (tests inject one; default discoverKernel(mem)). */
  discover?: (mem: PhysicalMemory) => Promise<DiscoveredKernel>;
  /** Called with each new baseline (store it). */
  onBaseline?: (b: Baseline) => void | Promise<void>;
  signal?: AbortSignal;
  log?: (msg: string) => void;
}

interface RegionWatch {
  check: Check;
  region: PolledRegion;
  reference: Uint8Array;
  current: Uint8Array;
  /** reference as last judged: when current differs from both, run the check again */
  lastJudged: Uint8Array;
  lastCleanAt: number;
  ops: { addr: number; buf: Uint8Array }[];
  /** second-read buffers for confirming a change (allocated on the first change) */
  confirmBuf?: Uint8Array;
  confirmOps?: { addr: number; buf: Uint8Array }[];
}

const SENTINEL_PANIC = 'panic_cpu';
/** jiffies advance at HZ ≥ 100: unchanged this long means the kernel is not running. */
const STALL_MS = 3000;
/** How often a stalled target is discovered again (a discovery scans memory). */
const STALL_PROBE_MS = 10_000;
const SENTINEL_JIFFIES = 'jiffies_64';

export interface WatchSummary {
  polls: number;
  alerts: number;
  events: number;
  achievedIntervalMs: number;
  textCycleSeconds: number | null;
  state: TargetState;
}

export class Watcher {
  private readonly o: Required<Pick<WatchOptions, 'intervalMs' | 'budgetBytesPerSec' | 'heavyEveryMs'>> & WatchOptions;
  private d!: DiscoveredKernel;
  private ctx!: CheckContext;
  private baseline!: Baseline;
  private regions: RegionWatch[] = [];
  private sentinelOps: { addr: number; buf: Uint8Array }[] = [];
  private panicBuf = new Uint8Array(4);
  private jiffiesBuf = new Uint8Array(8);
  private bannerBuf = new Uint8Array(0);
  private bannerRef = new Uint8Array(0);
  private needEstablish = false;
  private jiffiesMovedAt = 0;
  private lastStallProbe = 0;
  private lastEstablishTry = 0;
  private lastJiffies = -1n;
  private batch: { addr: number; buf: Uint8Array }[] = [];
  private alerted = new Map<string, Alert>();
  /** event findings already reported (module loaded/unloaded keys) */
  private eventsSeen = new Set<string>();
  private seq = 0;
  private state: TargetState = 'up';
  private polls = 0;
  private alertsRaised = 0;
  private eventsRaised = 0;
  private intervalEwma = 0;
  // text slicing
  private layout?: TextLayout;
  private sites: PatchSite[] = [];
  private textDigests?: Uint8Array;
  private textNext = 0;
  private textCycleStart = 0;
  private textCycleSeconds: number | null = null;
  private budgetCredit = 0;
  private lastHeavy = 0;
  private heavyChecks: Check[] = [];
  private textCheckOn = false;

  constructor(opts: WatchOptions) {
    this.o = { intervalMs: 10, budgetBytesPerSec: 32 << 20, heavyEveryMs: 5000, ...opts };
  }

  private now(): number {
    return performance.now();
  }

  private log(m: string): void {
    this.o.log?.(m);
  }

  private async emitEvent(type: MonitorEvent['type'], detail: string, data?: Record<string, unknown>): Promise<void> {
    const e: MonitorEvent = { time: new Date().toISOString(), target: this.o.target, type, detail, data };
    this.eventsRaised++;
    this.o.metrics?.event?.(e);
    for (const s of this.o.sinks) await Promise.resolve(s.event(e)).catch(() => undefined);
  }

  private async setState(s: TargetState, detail: string): Promise<void> {
    if (s === this.state) return;
    this.state = s;
    this.o.metrics?.state?.(s, this.d?.facts.release);
    await this.emitEvent('state', `${s}: ${detail}`, { state: s });
  }

  private async raise(f: Finding, detectedAfterMs: number | null): Promise<void> {
    if (f.kind === 'event') {
      if (this.eventsSeen.has(f.key)) return;
      this.eventsSeen.add(f.key);
      await this.emitEvent(f.key.startsWith('module_unloaded') ? 'module_unloaded' : 'module_loaded', f.evidence, {
        check: f.check,
        key: f.key,
      });
      return;
    }
    if (f.kind !== 'tampering' || this.alerted.has(f.key)) return;
    const t = Date.now();
    const a: Alert = {
      id: `${String(t).padStart(13, '0')}-${String(this.seq++ % 10000).padStart(4, '0')}-${Math.floor(
        Math.random() * 0xffffff,
      )
        .toString(16)
        .padStart(6, '0')}`,
      time: new Date(t).toISOString(),
      target: this.o.target,
      check: f.check,
      severity: f.severity,
      address: f.address,
      symbol: f.symbol,
      old: f.old ?? null,
      new: f.new ?? null,
      evidence: f.evidence,
      key: f.key,
      detected_after_ms: detectedAfterMs === null ? null : Math.round(detectedAfterMs * 1000) / 1000,
    };
    this.alerted.set(f.key, a);
    this.alertsRaised++;
    this.o.metrics?.alert?.(a);
    for (const s of this.o.sinks) await Promise.resolve(s.alert(a)).catch(() => undefined);
  }

  /** Findings of a fresh pass of one check: new keys alert; keys of this check no longer found are cleared. */
  private async judge(check: Check, r: CheckOutcome, detectedAfterMs: number | null): Promise<void> {
    this.o.metrics?.check?.(check.id);
    const keys = new Set(r.findings.map((f) => f.key));
    for (const f of r.findings) await this.raise(f, detectedAfterMs);
    for (const [key, a] of [...this.alerted]) {
      if (a.check === check.id && !keys.has(key) && !key.startsWith('text:page:')) {
        this.alerted.delete(key);
        await this.emitEvent('restored', `${a.symbol ?? a.address}: back to the baseline (${a.check})`, {
          alert: a.id,
          key,
        });
      }
    }
  }

  /** Discovery + baseline + the polled set. */
  private async establish(reason: 'start' | 'reboot'): Promise<void> {
    const discover = this.o.discover ?? ((m: PhysicalMemory) => discoverKernel(m, {}));
    this.d = await discover(this.o.mem);
    this.ctx = checkContext(this.d, this.o.signal);
    let base = this.o.baseline;
    if (base && reason === 'start') {
      const why = baselineMismatch(base, this.d);
      if (why) {
        this.log(`baseline not used: ${why}`);
        base = undefined;
      }
    } else base = undefined;
    const pass = await runChecks(this.ctx, this.o.checks, base, this.o.target);
    this.baseline = base ?? pass.baseline;
    this.alerted.clear();
    this.eventsSeen.clear();
    for (const r of pass.results) {
      const c = this.o.checks.find((x) => x.id === r.check)!;
      await this.judge(c, r, null);
    }
    if (!base) await this.o.onBaseline?.(this.baseline);
    await this.emitEvent(
      reason === 'start' ? 'baseline' : 'rebooted',
      `${reason === 'start' ? 'baseline' : 'target rebooted: new baseline'} of ${this.d.facts.release} (slide 0x${this.d.facts.kaslrSlide.toString(16)}), ${base ? 'from the baseline file' : 'first observation'}`,
      { release: this.d.facts.release, kaslr_slide: '0x' + this.d.facts.kaslrSlide.toString(16) },
    );
    this.o.metrics?.state?.('up', this.d.facts.release);

    // the polled set: every region the light checks returned, referenced to the baseline bytes
    this.regions = [];
    for (const r of pass.results) {
      const c = this.o.checks.find((x) => x.id === r.check)!;
      if (!c.light) continue;
      for (const { region, bytes } of r.regions ?? []) {
        const reference = new Uint8Array(bytes);
        const current = new Uint8Array(bytes.length);
        let off = 0;
        const ops = region.pieces.map((p) => {
          const op = { addr: p.pa, buf: current.subarray(off, off + p.len) };
          off += p.len;
          return op;
        });
        this.regions.push({
          check: c,
          region,
          reference,
          current,
          lastJudged: new Uint8Array(bytes),
          lastCleanAt: this.now(),
          ops,
        });
      }
    }
    this.sentinelOps = [];
    for (const [name, buf] of [
      [SENTINEL_PANIC, this.panicBuf],
      [SENTINEL_JIFFIES, this.jiffiesBuf],
    ] as const) {
      const va = this.d.symbols.get(name)?.address;
      if (va === undefined) continue;
      const r = await regionOf(this.d, name, va, buf.length).catch(() => undefined);
      if (r && r.pieces.length === 1) this.sentinelOps.push({ addr: r.pieces[0].pa, buf });
    }
    // the banner where discovery found it: gone = the memory now holds another boot (or garbage)
    const bn = Math.min(64, this.d.facts.banner.length);
    this.bannerRef = new Uint8Array(Buffer.from(this.d.facts.banner.slice(0, bn), 'latin1'));
    this.bannerBuf = new Uint8Array(bn);
    this.sentinelOps.push({ addr: this.d.facts.bannerPhys, buf: this.bannerBuf });
    this.batch = [...this.regions.flatMap((r) => r.ops), ...this.sentinelOps];
    this.lastJiffies = -1n;
    this.jiffiesMovedAt = 0;

    // heavy work: text in slices, the other heavy checks every heavyEveryMs
    this.textCheckOn = this.o.checks.some((c) => c.id === 'text');
    this.heavyChecks = this.o.checks.filter((c) => !c.light && c.id !== 'text');
    if (this.textCheckOn) {
      this.layout = textLayout(this.d);
      const warnings: string[] = [];
      this.sites = await findPatchSites(this.d, this.ctx.k, warnings);
      const tb = this.baseline.checks.text as TextBaseline | undefined;
      this.textDigests = tb ? fromBase64(tb.digests) : undefined;
      this.textNext = 0;
      this.textCycleStart = this.now();
    }
    this.lastHeavy = this.now();
  }

  /** Re-read a changed region; true when the second read equals the first. */
  private async confirm(r: RegionWatch): Promise<boolean> {
    if (!r.confirmBuf) {
      r.confirmBuf = new Uint8Array(r.current.length);
      let off = 0;
      r.confirmOps = r.ops.map((op) => {
        const c = { addr: op.addr, buf: r.confirmBuf!.subarray(off, off + op.buf.length) };
        off += op.buf.length;
        return c;
      });
    }
    const failures = await this.o.mem.readBatch(r.confirmOps!);
    if (failures.length > 0) return false;
    if (Buffer.compare(r.confirmBuf, r.current) === 0) return true;
    this.log(`${r.region.name}: two reads disagree; not judged until they agree`);
    return false;
  }

  /** Discover the kernel again; a different one (slide or banner place) than ours is a reboot. */
  private async probeReboot(): Promise<void> {
    const discover = this.o.discover ?? ((m: PhysicalMemory) => discoverKernel(m, {}));
    let fresh: DiscoveredKernel;
    try {
      fresh = await discover(this.o.mem);
    } catch (e) {
      this.log(`stalled target: no kernel found yet (${(e as Error).message})`);
      return;
    }
    if (fresh.facts.kaslrSlide !== this.d.facts.kaslrSlide || fresh.facts.bannerPhys !== this.d.facts.bannerPhys) {
      await this.setState('rebooted', `another kernel is running: slide 0x${fresh.facts.kaslrSlide.toString(16)}`);
      this.needEstablish = true;
    }
  }

  private panicCpu(): number {
    const v = this.panicBuf[0] | (this.panicBuf[1] << 8) | (this.panicBuf[2] << 16) | (this.panicBuf[3] << 24);
    return v;
  }

  /** One tick: the critical set, then a slice of heavy work. Returns false when the target is gone. */
  private async tick(intervalMs: number): Promise<void> {
    const t0 = this.now();
    const failures = await this.o.mem.readBatch(this.batch);
    const t1 = this.now();
    this.polls++;
    if (failures.length > 0) {
      await this.setState('unreachable', failures[0].error.message);
      return;
    }
    let bytes = 0;
    for (const op of this.batch) bytes += op.buf.length;
    this.o.metrics?.poll?.(intervalMs, t1 - t0, bytes);
    // sentinels
    if (Buffer.compare(this.bannerBuf, this.bannerRef) !== 0) {
      await this.setState('rebooted', 'the kernel banner is no longer where discovery found it');
      this.needEstablish = true;
      return;
    }
    if (this.sentinelOps.some((o) => o.buf === this.jiffiesBuf)) {
      const j = Buffer.from(this.jiffiesBuf.buffer).readBigUInt64LE(0);
      if (this.lastJiffies >= 0n && j < this.lastJiffies) {
        await this.setState('rebooted', `jiffies went back from ${this.lastJiffies} to ${j}`);
        this.needEstablish = true;
        return;
      }
      if (j !== this.lastJiffies) this.jiffiesMovedAt = t1;
      this.lastJiffies = j;
    }
    const panicCpu = this.sentinelOps.some((o) => o.buf === this.panicBuf) ? this.panicCpu() : -1;
    if (panicCpu !== -1) {
      await this.setState('panicked', `panic_cpu = ${panicCpu}: the kernel is panicking`);
      // a panicked machine is often reset: once its jiffies have stopped, look for another kernel
      if (this.jiffiesMovedAt > 0 && t1 - this.jiffiesMovedAt > STALL_MS && t1 - this.lastStallProbe > STALL_PROBE_MS) {
        this.lastStallProbe = t1;
        await this.probeReboot();
      }
    } else if (this.jiffiesMovedAt > 0 && t1 - this.jiffiesMovedAt > STALL_MS) {
      // jiffies stopped: the VM is paused, the kernel hung, or it rebooted and the old image is still
      // intact in RAM (a reboot does not clear memory). Discover again now and then: another kernel
      // (slide or banner place) means a reboot.
      if (this.state === 'up')
        await this.setState(
          'unreachable',
          `kernel stalled: jiffies unchanged for ${Math.round((t1 - this.jiffiesMovedAt) / 1000)} s`,
        );
      if (t1 - this.lastStallProbe > STALL_PROBE_MS) {
        this.lastStallProbe = t1;
        await this.probeReboot();
      }
      return;
    } else if (this.state !== 'up') await this.setState('up', 'reads answer again');

    for (const r of this.regions) {
      if (Buffer.compare(r.current, r.reference) === 0) {
        r.lastCleanAt = t1;
        if (Buffer.compare(r.lastJudged, r.reference) !== 0) {
          r.lastJudged.set(r.reference);
          await this.judge(r.check, await runCheck(this.ctx, r.check, this.baseline.checks[r.check.id]), null);
        }
        continue;
      }
      if (Buffer.compare(r.current, r.lastJudged) === 0) continue; // already judged this content
      // Confirm a change with a second read before judging it: under load a read was once seen to
      // return bytes of other offsets (bench/monitor, load 12), which a single read would have
      // turned into alerts. A real change reads the same twice; a torn read rarely does.
      if (!(await this.confirm(r))) continue;
      r.lastJudged.set(r.current);
      const after = t1 - r.lastCleanAt;
      const res = await runCheck(this.ctx, r.check, this.baseline.checks[r.check.id]);
      await this.judge(r.check, res, after);
    }

    // heavy work within the budget
    this.budgetCredit = Math.min(this.budgetCredit + (this.o.budgetBytesPerSec * intervalMs) / 1000, 8 << 20);
    if (this.textCheckOn && this.layout && this.budgetCredit >= 4096) {
      const pages = Math.min(Math.floor(this.budgetCredit / 4096), this.layout.pages - this.textNext, 256);
      try {
        const buf = await readPages(this.d, this.layout, this.textNext, pages);
        const problems: { site: PatchSite; problem: string }[] = [];
        const dig = hashPages(this.d, this.layout, this.textNext, buf, this.sites, problems);
        if (this.textDigests) {
          for (const f of compareDigests(this.d, this.layout, this.textNext, dig, this.textDigests))
            await this.raise(f, null);
        }
        for (const p of problems) await this.raise(siteFinding(this.d, p), null);
      } catch {
        /* unreadable slice: retried next cycle */
      }
      this.budgetCredit -= pages * 4096;
      this.textNext += pages;
      if (this.textNext >= this.layout.pages) {
        this.textNext = 0;
        const now = this.now();
        this.textCycleSeconds = (now - this.textCycleStart) / 1000;
        this.textCycleStart = now;
        this.o.metrics?.textCycle?.(this.textCycleSeconds);
      }
    }
    if (this.heavyChecks.length && this.now() - this.lastHeavy >= this.o.heavyEveryMs) {
      const since = this.now() - this.lastHeavy;
      this.lastHeavy = this.now();
      for (const c of this.heavyChecks) {
        const r = await runCheck(this.ctx, c, this.baseline.checks[c.id]);
        await this.judge(c, r, since);
      }
    }
  }

  /** Run until the signal aborts. */
  async run(): Promise<WatchSummary> {
    const { intervalMs } = this.o;
    const signal = this.o.signal;
    await this.establish('start');
    await this.emitEvent(
      'started',
      `watching ${this.regions.length} regions (${this.batch.reduce((n, o) => n + o.buf.length, 0)} bytes) every ${intervalMs} ms`,
      {
        regions: this.regions.map((r) => ({ name: r.region.name, size: r.region.size })),
        text_pages: this.layout?.pages ?? 0,
        budget_bytes_per_sec: this.o.budgetBytesPerSec,
        text_cycle_estimate_s: this.layout ? (this.layout.pages * 4096) / this.o.budgetBytesPerSec : null,
      },
    );
    let last = this.now();
    let next = last;
    while (!signal?.aborted) {
      const start = this.now();
      const achieved = start - last;
      last = start;
      this.intervalEwma = this.intervalEwma === 0 ? achieved : this.intervalEwma * 0.98 + achieved * 0.02;
      try {
        if (this.needEstablish) {
          // a new boot: discover again (at most once a second while the kernel comes up)
          if (this.now() - this.lastEstablishTry >= 1000) {
            this.lastEstablishTry = this.now();
            await this.establish('reboot');
            this.needEstablish = false;
            await this.setState('up', 'new boot discovered');
          }
        } else await this.tick(achieved);
      } catch (e) {
        // never crash on bad memory: report and keep polling
        this.log(`poll error: ${(e as Error).message}`);
        await this.setState('unreachable', (e as Error).message);
      }
      next += intervalMs;
      const wait = next - this.now();
      if (wait < -intervalMs * 10) next = this.now(); // fell far behind: do not burst to catch up
      if (wait > 0) await sleep(wait, signal);
    }
    await this.emitEvent('stopped', `stopped after ${this.polls} polls`);
    return this.summary();
  }

  summary(): WatchSummary {
    return {
      polls: this.polls,
      alerts: this.alertsRaised,
      events: this.eventsRaised,
      achievedIntervalMs: Math.round(this.intervalEwma * 1000) / 1000,
      textCycleSeconds: this.textCycleSeconds,
      state: this.state,
    };
  }

  /** The baseline in use (for `pmi repair`, stored by the CLI). */
  currentBaseline(): Baseline | undefined {
    return this.baseline;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
