/**
 * Stale completions, scripted: a responder that plays the software adapter's worst case on purpose
 * (a completion duplicated *and* reordered: the copy completes request A, the original is delivered
 * inside the next request B on the same tag), deterministically, on one tag.
 *
 * A completion is matched only by tag, requester, LowerAddress (7 bits) and ByteCount, so when A and
 * B end at the same address mod 128 the stale original passes B's checks. The client must never
 * issue B on that tag with that end residue within the drain window (README-client.md).
 */
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { readPhys } from '@pmi/core';
import { openNetTlp } from '../src/client/index.js';
import { CPL_SC, DECODE_OK, MAX_DATAGRAM, Tlp, TlpKind, decodeTlp, encodeCompletion } from '../src/codec/tlp.js';
import { portBase, randomBytes } from './client-responder.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Completions of one MRd as a root complex sends them: split at 256-byte (RCB-aligned) boundaries. */
let clock = 0x7fff_0000; // NetTLP header timestamp when stamping (wraps past 2^32 on purpose)
function completions(
  src: Uint8Array,
  addr: number,
  len: number,
  requester: number,
  tag: number,
  stamp = false,
): Buffer[] {
  const out: Buffer[] = [];
  let cur = addr;
  const end = addr + len;
  while (cur < end) {
    let ce = Math.floor((cur + 256) / 64) * 64;
    if (ce > end) ce = end;
    const b = Buffer.alloc(MAX_DATAGRAM);
    const ts = stamp ? (clock = (clock + 0x1000_0000) >>> 0) : 0;
    const n = encodeCompletion(b, CPL_SC, 0, requester, tag, end - cur, cur & 0x7f, src.subarray(cur, ce), 0, ts);
    out.push(b.subarray(0, n));
    cur = ce;
  }
  return out;
}

/**
 * Scripted responder on one port. `order(k, cpls, held)` returns the datagrams to send for the k-th
 * MRd (cpls = its own completions, held = a completion held back from earlier requests, if any) and
 * what to hold back now.
 */
async function scripted(
  src: Uint8Array,
  order: (k: number, cpls: Buffer[], held: Buffer | undefined, addr: number) => { send: Buffer[]; hold?: Buffer },
  stamp = false,
): Promise<{ base: number; requests: { addr: number; len: number }[] }> {
  const requests: { addr: number; len: number }[] = [];
  for (let attempt = 0; ; attempt++) {
    const base = portBase();
    const sock = dgram.createSocket('udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(base, '127.0.0.2', () => {
          sock.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      sock.close();
      if (attempt < 20) continue;
      throw e;
    }
    let held: Buffer | undefined;
    const t = new Tlp();
    sock.on('message', (msg, rinfo) => {
      if (decodeTlp(msg, msg.length, t) !== DECODE_OK || t.kind !== TlpKind.MemRead) return;
      const k = requests.length;
      requests.push({ addr: t.address, len: t.byteLen });
      const plan = order(k, completions(src, t.address, t.byteLen, t.requester, t.tag, stamp), held, t.address);
      held = plan.hold;
      for (const b of plan.send) sock.send(b, rinfo.port, rinfo.address);
    });
    cleanups.push(() => new Promise<void>((r) => sock.close(() => r())));
    return { base, requests };
  }
}

describe('stale completions (scripted duplicate + reorder on one tag)', () => {
  it('the original of a duplicated last completion of A, delivered inside B (same tag, same end residue), is not accepted', async () => {
    const src = randomBytes(1 << 16, 21);
    // A: send every completion, the last one twice — the copy now (it completes A), the original held.
    // Every later request: its first completion, then the held original, then the rest.
    const { base, requests } = await scripted(src, (k, cpls, held) => {
      if (k === 0) return { send: cpls, hold: cpls[cpls.length - 1] };
      return { send: held ? [cpls[0], held, ...cpls.slice(1)] : cpls };
    });
    // drain=2000: the scripted original arrives inside B whenever B is sent, so B must be inside the
    // drain window however slow a loaded CI machine is between A and B (the rule's stated assumption).
    const c = await openNetTlp(`nettlp://127.0.0.2:${base}?tags=1&ranges=0+64K&mrrs=512&timeout=20&drain=2000`);
    cleanups.push(() => c.close());
    // A = [0, 512) and B = [0x1000, 0x1200) both end at residue 0 mod 128; A's last completion
    // (ByteCount 256, LowerAddress 0) fits B's second half exactly.
    const a = await readPhys(c, 0, 512);
    expect(Buffer.compare(a, src.subarray(0, 512))).toBe(0);
    const b = await readPhys(c, 0x1000, 512);
    expect(Buffer.compare(b, src.subarray(0x1000, 0x1200)), JSON.stringify({ requests, m: c.metrics })).toBe(0);
    // B went out so that the stale completion could not match (a chunk ending at another residue),
    // and the stale datagram was rejected, not accepted.
    const first = requests[1];
    expect((first.addr + first.len) % 128).not.toBe(0);
    expect(c.metrics.late_completions + c.metrics.dropped_invalid).toBeGreaterThanOrEqual(1);
  });

  it('with stamped NetTLP timestamps, B goes out unshifted and the stale original is rejected by its timestamp', async () => {
    const src = randomBytes(1 << 16, 23);
    const WARM = 70; // 1-completion reads that switch the client to timestamp mode
    const { base, requests } = await scripted(
      src,
      (_k, cpls, held, addr) => {
        if (addr === 0) return { send: cpls, hold: cpls[cpls.length - 1] }; // A
        if (held) return { send: [cpls[0], held, ...cpls.slice(1)] };
        return { send: cpls };
      },
      true,
    );
    const c = await openNetTlp(`nettlp://127.0.0.2:${base}?tags=1&ranges=0+64K&mrrs=512&timeout=20`);
    cleanups.push(() => c.close());
    for (let i = 0; i < WARM; i++) await readPhys(c, 0x8000 + i * 64, 8);
    expect(c.metrics.ts_mode).toBe(1);
    const a = await readPhys(c, 0, 512);
    expect(Buffer.compare(a, src.subarray(0, 512))).toBe(0);
    const b = await readPhys(c, 0x1000, 512);
    expect(Buffer.compare(b, src.subarray(0x1000, 0x1200)), JSON.stringify(c.metrics)).toBe(0);
    // B was sent whole (no residue shift needed) and the stale copy was recognised by its timestamp.
    expect(requests[requests.findIndex((r) => r.addr === 0) + 1]).toEqual({ addr: 0x1000, len: 512 });
    expect(c.metrics.stale_rejected).toBe(1);
  });

  it('a completion conflicting with bytes already received (stale, after the drain window) makes the client re-request', async () => {
    const src = randomBytes(1 << 16, 22);
    // A's last completion is held (no copy); A times out and is re-requested, its retry completes.
    // The held original is then delivered inside a later request whose own completion for the same
    // region follows it: same region, different bytes → the client must re-request, not guess.
    let armed = false;
    const { base } = await scripted(src, (k, cpls, held) => {
      if (k === 0) return { send: cpls.slice(0, -1), hold: cpls[cpls.length - 1] };
      if (held && armed) {
        // stale first (it lands in the not-yet-received second half), then the real second half
        // (conflict: different bytes), then the first half.
        return { send: [held, ...cpls.slice(1), cpls[0]] };
      }
      return { send: cpls, hold: held };
    });
    const c = await openNetTlp(`nettlp://127.0.0.2:${base}?tags=1&ranges=0+64K&mrrs=512&timeout=5&retries=5`);
    cleanups.push(() => c.close());
    const a = await readPhys(c, 0, 512);
    expect(Buffer.compare(a, src.subarray(0, 512))).toBe(0);
    // Wait out the quarantine of A's residue (abandoned request: max(4·RTO, 50 ms)), so that the
    // client may again issue a request ending at residue 0 with ≥ 256 bytes on the tag.
    await new Promise((r) => setTimeout(r, 400));
    await readPhys(c, 0x3000, 4); // (lets the client's drain mark catch up with the clock)
    armed = true;
    const b = await readPhys(c, 0x2000, 512);
    expect(Buffer.compare(b, src.subarray(0x2000, 0x2200)), JSON.stringify(c.metrics)).toBe(0);
    expect(c.metrics.conflicts).toBe(1);
  });
});
