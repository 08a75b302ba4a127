// The instrumented streaming pipeline: headless Chromium (host page + client page), a Node page
// server, signalling through Node (non-trickle: gather, then exchange candidates), and optionally
// the userspace impairment relay on the media/data path. Returns the raw per-frame events.
import { chromium, type Browser, type Page } from 'playwright-core';
import { existsSync } from 'node:fs';
import { startPageServer, type PageServer } from './server.js';
import { startRelay, firstLoopbackUdp, cleanProfile, parseCandidate } from './relay/index.js';
import type { Endpoint, LinkProfile, PacketRecord, Relay, RelayPath, RelayStats } from './relay/index.js';

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-quic',
  // Two pages animate at once; neither may be throttled as a "background" tab.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export interface RunConfig {
  codec: 'vp8' | 'vp9' | 'h264' | 'av1';
  w: number;
  h: number;
  fps: number;
  /** Measured window, ms (after warm-up). */
  durationMs: number;
  /** Discarded start (bitrate ramp-up, jitter-buffer convergence), ms. */
  warmupMs: number;
  down: LinkProfile;
  up: LinkProfile;
  /** Route media and data through the impairment relay (always, unless explicitly off). */
  relay: boolean;
  seed: number;
  /** 'generator' (MediaStreamTrackGenerator, default) or 'canvas' (captureStream + requestFrame). */
  capture: 'generator' | 'canvas';
  /** Draw the pixel stamp (host) / read it back (client). Off only for the overhead benchmark. */
  stamp: boolean;
  observe: boolean;
  absCaptureTime: boolean;
  statsIntervalMs: number;
  maxBitrate?: number;
  inputIntervalMs: [number, number];
  /** DataChannel clock-exchange (NTP-style ping) interval, ms; each ping is also an RTT sample. */
  clockIntervalMs: number;
  /**
   * Each host frame tick is delayed by a seeded U(0, tickDitherMs) (≤ 0.9 period). Host and
   * client share one clock here, so without it the phase of frame arrivals against the client's
   * 60 Hz compositor is locked for the whole run, and an added delay shifts that phase
   * (40 ms ≡ 6.7 ms mod 16.7 ms): receive→display then changes with the delay by up to a
   * refresh interval. Separate machines drift through all phases; the dither does the same.
   * Default 1000/60 (one refresh interval); 0 = a strict cadence.
   */
  tickDitherMs: number;
}

/** One live change of the relay's link profiles, `at` ms after the measured window opens. */
export interface ScheduleStep {
  at: number;
  label: string;
  down: LinkProfile;
  up: LinkProfile;
}

/** When a scheduled change actually took effect at the relay (epoch ms, the relay records' clock). */
export interface SwitchRecord {
  label: string;
  /** Epoch ms (performance.timeOrigin + now, the relay's PacketRecord clock). */
  t: number;
  /** How late against the schedule, ms (event-loop delay under load). */
  late: number;
}

export function defaultConfig(over: Partial<RunConfig> = {}): RunConfig {
  return {
    codec: 'vp8',
    w: 640,
    h: 360,
    fps: 60,
    durationMs: 5000,
    warmupMs: 2000,
    down: cleanProfile(),
    up: cleanProfile(),
    relay: true,
    seed: 1,
    capture: 'generator',
    stamp: true,
    observe: true,
    absCaptureTime: true,
    statsIntervalMs: 100,
    inputIntervalMs: [20, 60],
    clockIntervalMs: 100,
    tickDitherMs: 1000 / 60,
    ...over,
  };
}

export interface HostData {
  timeOrigin: number;
  frames: {
    id: number;
    inputSeq: number;
    tTick: number;
    tRender: number;
    tCapture: number;
    tSnapshot?: number;
    stampCost: number;
  }[];
  inputs: { seq: number; tEmit: number; tRecv: number; frameId: number; tApplied: number }[];
  stats: StatsSnapshot[];
  clockServed: number;
  errors: string[];
}

export interface DisplayedFrame {
  tCb: number;
  presentationTime: number | null;
  expectedDisplayTime: number | null;
  captureTime: number | null;
  receiveTime: number | null;
  rawCaptureTime: number | null;
  rtpTimestamp: number | null;
  processingDuration: number | null;
  presentedFrames: number;
  width: number;
  height: number;
  frameId: number | null;
  inputSeq: number | null;
  readCost: number | null;
}

export interface ClientData {
  timeOrigin: number;
  displayed: DisplayedFrame[];
  inputs: { seq: number; tEmit: number }[];
  clock: { id: number; t0: number; t1: number; t2: number; t3: number }[];
  stats: StatsSnapshot[];
  sync: {
    t: number;
    rtpTimestamp: number;
    timestamp: number;
    captureTimestamp: number | null;
    senderCaptureTimeOffset: number | null;
  }[];
  errors: string[];
}

export type StatsSnapshot = { t: number } & Record<string, Record<string, unknown> | number>;

export interface RawRun {
  config: RunConfig;
  /** Epoch ms: measurement window [from, to). */
  window: { from: number; to: number };
  negotiated: { codec: string | null; absCaptureTime: boolean; capture: string; relay: boolean; playout: Playout };
  host: HostData;
  client: ClientData;
  relay: { records: PacketRecord[]; stats: RelayStats } | null;
  chromium: string;
  /** Epoch ms − CLOCK_MONOTONIC ms (WebRTC's rtc::TimeMillis clock), measured in Node. */
  monoToEpoch: number;
  /** Live profile changes made during the window (runPipeline's `schedule`), in order. */
  switches: SwitchRecord[];
}

export interface PipelineOptions {
  /** Live relay profile changes inside the measured window (needs the relay). The warm-up runs
   * with cfg.down / cfg.up; a step at 0 switches right when the window opens. */
  schedule?: ScheduleStep[];
}

/** A launched browser plus page server, reusable across runs (tests run several back to back). */
export interface Lab {
  browser: Browser;
  server: PageServer;
  playout: Playout;
  close(): Promise<void>;
}

export function chromiumPath(): string {
  const p = process.env.LAGMETER_CHROMIUM ?? '/usr/bin/chromium';
  if (!existsSync(p))
    throw new Error(`Chromium not found at ${p} (apt-get install -y chromium, or set LAGMETER_CHROMIUM)`);
  return p;
}

/**
 * The receiver's playout policy (a browser-wide WebRTC field trial, so it is a Lab option):
 * - 'adaptive' (Chromium's default): frames are held until a render time = predicted arrival
 *   (TimestampExtrapolator) + target delay (jitter estimate). The predictor does not follow a
 *   sudden 40 ms delay step (its step detector needs > 73 ms per frame; it adapts over many
 *   seconds), so after a live profile change the hold time absorbs most of the step.
 * - 'zero': playout delay min = max = 0 (WebRTC-ForcePlayoutDelay, what the RTP playout-delay
 *   extension of game-streaming services asks for): every frame is decoded and handed to the
 *   compositor as soon as it is complete. Calibration runs use it: the receiver's own adaptation
 *   is then not a confounder, and what moves is what the relay injected.
 */
export type Playout = 'adaptive' | 'zero';
export const ZERO_PLAYOUT_DELAY_TRIAL = 'WebRTC-ForcePlayoutDelay/min_ms:0,max_ms:0/';

export interface LabOptions {
  playout?: Playout;
  /** Extra WebRTC field trials (Chromium --force-fieldtrials syntax, Name/params/ pairs). */
  fieldTrials?: string;
}

export async function openLab(opts: LabOptions = {}): Promise<Lab> {
  const server = await startPageServer();
  const trials = (opts.playout === 'zero' ? ZERO_PLAYOUT_DELAY_TRIAL : '') + (opts.fieldTrials ?? '');
  const args = trials ? [...CHROMIUM_FLAGS, `--force-fieldtrials=${trials}`] : CHROMIUM_FLAGS;
  const browser = await chromium.launch({ executablePath: chromiumPath(), args, headless: true });
  return {
    browser,
    server,
    playout: opts.playout ?? 'adaptive',
    async close() {
      await browser.close().catch(() => undefined);
      await server.close();
    },
  };
}

interface Offer {
  sdp: string;
  candidates: string[];
  codec: string | null;
  absCaptureTime: boolean;
  capture: string;
}
interface Answer {
  sdp: string;
  candidates: string[];
  absCaptureTime: boolean;
}

/**
 * The UDP host candidate to route: loopback when Chromium offers it, else the first IPv4 one.
 * Chromium adds 127.0.0.1 (with --allow-loopback-in-peer-connection) only when the machine has
 * no other interface; on a VM with eth0 it offers the interface address — datagrams between two
 * local addresses never leave the kernel (they are routed through lo), so traffic stays local.
 */
export function localUdpEndpoint(candidates: string[]): Endpoint | undefined {
  const lo = firstLoopbackUdp(candidates);
  if (lo) return lo;
  for (const c of candidates) {
    const p = parseCandidate(c);
    if (p && p.transport === 'udp' && p.type === 'host' && /^\d+\.\d+\.\d+\.\d+$/.test(p.address))
      return { address: p.address, port: p.port };
  }
  return undefined;
}

/** relay.rewriteCandidate, extended to a non-loopback local address (same rewrite, own code). */
function rewriteVia(relay: Relay, c: string, path: RelayPath, side: 'host' | 'client'): string | null {
  const r = relay.rewriteCandidate(c, path, side);
  if (r !== null) return r;
  const p = parseCandidate(c);
  const own = side === 'host' ? path.host : path.client;
  if (!p || p.transport !== 'udp' || p.type !== 'host' || p.address !== own.address || p.port !== own.port) return null;
  const seen = side === 'host' ? path.clientFacing : path.hostFacing;
  return c.replace(` ${p.address} ${p.port} typ `, ` ${seen.address} ${seen.port} typ `);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(page: Page, expr: string, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await page.evaluate(expr)) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** One measurement run: fresh pages and peer connections (and relay), warm-up, measured window. */
export async function runPipeline(cfg: RunConfig, lab?: Lab, opts: PipelineOptions = {}): Promise<RawRun> {
  const schedule = [...(opts.schedule ?? [])].sort((a, b) => a.at - b.at);
  if (schedule.length && !cfg.relay) throw new Error('a profile schedule needs the relay');
  const own = lab ? null : await openLab();
  const L = lab ?? own!;
  let relay: Relay | null = null;
  const ctxHost = await L.browser.newContext();
  const ctxClient = await L.browser.newContext();
  try {
    const host = await ctxHost.newPage();
    const client = await ctxClient.newPage();
    const logs: string[] = [];
    for (const [name, p] of [
      ['host', host],
      ['client', client],
    ] as const) {
      p.on('pageerror', (e) => logs.push(`${name}: ${e.message}`));
    }
    await Promise.all([host.goto(`${L.server.url}/host.html`), client.goto(`${L.server.url}/client.html`)]);
    await waitFor(host, 'typeof window.lm === "object"', 10_000, 'host page');
    await waitFor(client, 'typeof window.lm === "object"', 10_000, 'client page');
    const pageCfg = {
      w: cfg.w,
      h: cfg.h,
      fps: cfg.fps,
      codec: cfg.codec,
      seed: cfg.seed,
      capture: cfg.capture,
      stamp: cfg.stamp,
      observe: cfg.observe,
      absCaptureTime: cfg.absCaptureTime,
      maxBitrate: cfg.maxBitrate,
      inputIntervalMs: cfg.inputIntervalMs,
      clockIntervalMs: cfg.clockIntervalMs,
      tickDitherMs: cfg.tickDitherMs,
    };
    // Signalling through Node: offer (gathered), answer (gathered), then candidates — rewritten
    // through the relay when it is on, so that every packet of both directions passes it.
    const offer: Offer = await host.evaluate((c) => (globalThis as unknown as LmWin).lm.init(c), pageCfg);
    await client.evaluate((c) => (globalThis as unknown as LmWin).lm.init(c), pageCfg);
    const answer: Answer = await client.evaluate((sdp) => (globalThis as unknown as LmWin).lm.answer(sdp), offer.sdp);
    let toClient = offer.candidates;
    let toHost = answer.candidates;
    if (cfg.relay) {
      relay = await startRelay({ down: cfg.down, up: cfg.up, seed: cfg.seed });
      const hostEp = localUdpEndpoint(offer.candidates);
      const clientEp = localUdpEndpoint(answer.candidates);
      if (!hostEp || !clientEp) throw new Error('no local UDP host candidate');
      const path = await relay.addPath(hostEp, clientEp);
      const r = relay;
      toClient = offer.candidates.map((c) => rewriteVia(r, c, path, 'host')).filter((c): c is string => !!c);
      toHost = answer.candidates.map((c) => rewriteVia(r, c, path, 'client')).filter((c): c is string => !!c);
    } else {
      const only = (cs: string[]) => {
        const ep = localUdpEndpoint(cs);
        return cs.filter((c) => {
          const p = parseCandidate(c);
          return p && ep && p.transport === 'udp' && p.address === ep.address && p.port === ep.port;
        });
      };
      toClient = only(offer.candidates);
      toHost = only(answer.candidates);
    }
    await host.evaluate(([sdp, c]) => (globalThis as unknown as LmWin).lm.accept(sdp, c), [
      answer.sdp,
      toHost,
    ] as const);
    await client.evaluate((c) => (globalThis as unknown as LmWin).lm.addCandidates(c), toClient);
    await waitFor(client, 'window.lm.framesSeen() > 0', 20_000, `first displayed frame (${logs.join('; ')})`);
    await host.evaluate((ms) => (globalThis as unknown as LmWin).lm.startStats(ms), Math.max(cfg.statsIntervalMs, 250));
    await client.evaluate((ms) => (globalThis as unknown as LmWin).lm.startStats(ms), cfg.statsIntervalMs);
    const from = Date.now() + cfg.warmupMs;
    const switches: SwitchRecord[] = [];
    for (const step of schedule) {
      await sleep(from + step.at - Date.now());
      relay!.setProfile('down', step.down);
      relay!.setProfile('up', step.up);
      const t = performance.timeOrigin + performance.now();
      switches.push({ label: step.label, t, late: Math.round((Date.now() - (from + step.at)) * 100) / 100 });
    }
    await sleep(from + cfg.durationMs - Date.now());
    const to = Date.now();
    await client.evaluate(() => (globalThis as unknown as LmWin).lm.stop());
    // Let frames in flight reach the client before the host stops.
    const lastDown = schedule.length ? schedule[schedule.length - 1].down : cfg.down;
    await sleep(Math.min(1000, 200 + lastDown.delayMs * 2 + lastDown.jitterMs * 2));
    await host.evaluate(() => (globalThis as unknown as LmWin).lm.stop());
    const [hostData, clientData] = await Promise.all([
      host.evaluate(() => (globalThis as unknown as LmWin).lm.collect()) as Promise<HostData>,
      client.evaluate(() => (globalThis as unknown as LmWin).lm.collect()) as Promise<ClientData>,
    ]);
    hostData.errors.push(...logs);
    await Promise.all([
      host.evaluate(() => (globalThis as unknown as LmWin).lm.close()),
      client.evaluate(() => (globalThis as unknown as LmWin).lm.close()),
    ]);
    return {
      config: cfg,
      window: { from, to },
      negotiated: {
        codec: offer.codec,
        absCaptureTime: offer.absCaptureTime && answer.absCaptureTime,
        capture: offer.capture,
        relay: cfg.relay,
        playout: L.playout,
      },
      host: hostData,
      client: clientData,
      relay: relay ? { records: relay.records(), stats: relay.stats() } : null,
      chromium: L.browser.version(),
      monoToEpoch: performance.timeOrigin + performance.now() - Number(process.hrtime.bigint()) / 1e6,
      switches,
    };
  } finally {
    await relay?.close().catch(() => undefined);
    await ctxHost.close().catch(() => undefined);
    await ctxClient.close().catch(() => undefined);
    await own?.close();
  }
}

/** The pages' window.lm control surface, as seen from page.evaluate (no DOM lib in Node code). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type LmWin = { lm: any };
