import type { PacketRecord } from './types.js';

/** Network timing of one RTP frame (all packets of one SSRC sharing an RTP timestamp). */
export interface FrameTiming {
  dir: 'up' | 'down';
  ssrc: number;
  rtpTs: number;
  pt: number;
  packets: number;
  bytes: number;
  lost: number;
  /** Whether a packet with the marker bit (last packet of a video frame) arrived. */
  marker: boolean;
  /** First / last packet arrival at the relay (sent by the host), ms. */
  firstIn: number;
  lastIn: number;
  /** First / last packet departure from the relay (towards the client), ms; NaN if none left. */
  firstOut: number;
  lastOut: number;
}

/** Group RTP packet records into frames, in order of first arrival. */
export function frameTimings(
  records: readonly PacketRecord[],
  filter: { dir?: 'up' | 'down'; ssrc?: number } = { dir: 'down' },
): FrameTiming[] {
  const map = new Map<string, FrameTiming>();
  for (const r of records) {
    if (!r.rtp) continue;
    if (filter.dir && r.dir !== filter.dir) continue;
    if (filter.ssrc !== undefined && r.rtp.ssrc !== filter.ssrc) continue;
    const key = `${r.dir}/${r.rtp.ssrc}/${r.rtp.ts}`;
    let f = map.get(key);
    if (!f) {
      f = {
        dir: r.dir,
        ssrc: r.rtp.ssrc,
        rtpTs: r.rtp.ts,
        pt: r.rtp.pt,
        packets: 0,
        bytes: 0,
        lost: 0,
        marker: false,
        firstIn: r.tIn,
        lastIn: r.tIn,
        firstOut: NaN,
        lastOut: NaN,
      };
      map.set(key, f);
    }
    f.packets++;
    f.bytes += r.size;
    if (r.rtp.marker) f.marker = true;
    f.firstIn = Math.min(f.firstIn, r.tIn);
    f.lastIn = Math.max(f.lastIn, r.tIn);
    if (r.dropped) f.lost++;
    if (r.tOut !== undefined) {
      f.firstOut = Number.isNaN(f.firstOut) ? r.tOut : Math.min(f.firstOut, r.tOut);
      f.lastOut = Number.isNaN(f.lastOut) ? r.tOut : Math.max(f.lastOut, r.tOut);
    }
  }
  return [...map.values()];
}
