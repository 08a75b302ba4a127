// Plain-text rendering of a summary, and run-directory output (per-frame JSONL + summary).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Analysis, Summary } from './measure.js';

const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');

export function formatSummary(s: Summary): string {
  const rows: string[][] = [['stage', 'median', 'p95', 'p99', 'n', 'source']];
  rows.push([
    'e2e (input → display)',
    f(s.e2e.median),
    f(s.e2e.p95),
    f(s.e2e.p99),
    String(s.e2e.n),
    `ci95 ${f(s.e2e.ci95[0])}–${f(s.e2e.ci95[1])}`,
  ]);
  for (const [name, st] of Object.entries(s.stages))
    rows.push([`  ${name}`, f(st.median), f(st.p95), f(st.p99), String(st.n), st.source]);
  rows.push([
    'rtt (RTCP)',
    f(s.network.rtt.median),
    f(s.network.rtt.p95),
    f(s.network.rtt.p99),
    String(s.network.rtt.n),
    s.network.rtt.source,
  ]);
  rows.push([
    'rtt (DataChannel)',
    f(s.network.rtt_datachannel.median),
    f(s.network.rtt_datachannel.p95),
    f(s.network.rtt_datachannel.p99),
    String(s.network.rtt_datachannel.n),
    '',
  ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 || i === 5 ? c.padEnd(w[i]) : c.padStart(w[i])))
      .join('  ')
      .trimEnd();
  const out = [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)];
  const n = s.network;
  const c = s.clock.estimate;
  out.push(
    '',
    `network: loss ${(n.loss * 100).toFixed(2)}%  nack ${n.nack}  pli ${n.pli}  retransmitted ${n.retransmitted}  freezes ${n.freezes} (${n.freeze_ms} ms)`,
    `clock: shared (one machine); DataChannel NTP estimate host−client ${c ? `${c.offset.toFixed(2)} ± ${c.bound.toFixed(2)} ms (min RTT ${c.rttMin.toFixed(2)} ms, ${c.n} samples)` : 'n/a'} — one-way figures are good to that bound on separate machines`,
    `cross-check: capture→display pixel ${f(s.crosscheck.capture_to_display_pixel.median)} ms vs WebRTC rVFC ${f(s.crosscheck.capture_to_display_rvfc.median)} ms (median per-frame diff ${f(s.crosscheck.rvfc_minus_pixel.median)} ms)`,
    `frames: ${s.frames.stamped} displayed (${s.frames.fps_displayed} fps) of ${s.frames.host_rendered} rendered, ${s.frames.unreadable} unreadable stamps; inputs echoed ${s.inputs.echoed}/${s.inputs.emitted}`,
    `codec: ${s.codec.negotiated} ${s.codec.resolution ?? ''} target ${s.codec.targetBitrate ?? '?'} bps, quality limitation ${s.codec.qualityLimitation ?? '?'}, abs-capture-time ${s.codec.absCaptureTime ? 'on' : 'off'}, capture ${s.codec.capture}`,
  );
  return out.join('\n');
}

export async function writeRun(dir: string, a: Analysis): Promise<void> {
  await mkdir(dir, { recursive: true });
  const jsonl = (xs: unknown[]) => xs.map((x) => JSON.stringify(x)).join('\n') + (xs.length ? '\n' : '');
  await writeFile(join(dir, 'frames.jsonl'), jsonl(a.frames));
  await writeFile(join(dir, 'inputs.jsonl'), jsonl(a.inputs));
  await writeFile(join(dir, 'events.jsonl'), jsonl(a.events));
  await writeFile(join(dir, 'summary.json'), JSON.stringify(a.summary, null, 2) + '\n');
  await writeFile(join(dir, 'summary.txt'), formatSummary(a.summary) + '\n');
}
