/**
 * pcap writer: NetTLP datagrams as Ethernet/IPv4/UDP frames (LINKTYPE_ETHERNET), so
 * Wireshark/tcpdump with a NetTLP dissector (UDP 12288–20479) decode the traffic.
 * Writes are buffered and flushed synchronously in blocks; close() flushes the rest.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;
const ETH = 14;
const IPV4 = 20;
const UDP = 8;
const FLUSH_AT = 1 << 20;

function ipv4ToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new TypeError(`pcap: not an IPv4 address: '${ip}'`);
  }
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export class PcapWriter {
  private readonly fd: number;
  private readonly buf = Buffer.alloc(FLUSH_AT + 65536);
  private used = 0;
  private closed = false;
  packets = 0;

  constructor(path: string) {
    this.fd = openSync(path, 'w');
    const h = this.buf;
    h.writeUInt32LE(0xa1b23c4d, 0); // nanosecond-resolution pcap
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeInt32LE(0, 8);
    h.writeUInt32LE(0, 12);
    h.writeUInt32LE(65535, 16); // snaplen
    h.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
    this.used = GLOBAL_HEADER;
  }

  /** Record one UDP datagram (payload = NetTLP header + TLP) between the given endpoints. */
  write(
    srcIp: string,
    srcPort: number,
    dstIp: string,
    dstPort: number,
    payload: Uint8Array,
    len = payload.length,
  ): void {
    if (this.closed) return;
    const frameLen = ETH + IPV4 + UDP + len;
    if (this.used + RECORD_HEADER + frameLen > this.buf.length) this.flush();
    const b = this.buf;
    let o = this.used;
    const ns = process.hrtime.bigint();
    const nowNs = BigInt(Date.now()) * 1_000_000n + (ns % 1_000_000n);
    b.writeUInt32LE(Number(nowNs / 1_000_000_000n), o);
    b.writeUInt32LE(Number(nowNs % 1_000_000_000n), o + 4);
    b.writeUInt32LE(frameLen, o + 8);
    b.writeUInt32LE(frameLen, o + 12);
    o += RECORD_HEADER;
    // Ethernet: NetTLP's hardware MACs (adapter 00:11:22:33:44:55); the host side is made up.
    b.fill(0, o, o + 12);
    b[o + 5] = 0x55;
    b[o + 6 + 5] = 0x01;
    b.writeUInt16BE(0x0800, o + 12);
    o += ETH;
    const ipStart = o;
    b[o] = 0x45;
    b[o + 1] = 0;
    b.writeUInt16BE(IPV4 + UDP + len, o + 2);
    b.writeUInt16BE(this.packets & 0xffff, o + 4);
    b.writeUInt16BE(0x4000, o + 6); // DF
    b[o + 8] = 64;
    b[o + 9] = 17;
    b.writeUInt16BE(0, o + 10);
    b.writeUInt32BE(ipv4ToInt(srcIp), o + 12);
    b.writeUInt32BE(ipv4ToInt(dstIp), o + 16);
    let sum = 0;
    for (let i = 0; i < IPV4; i += 2) sum += b.readUInt16BE(ipStart + i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    b.writeUInt16BE(~sum & 0xffff, ipStart + 10);
    o += IPV4;
    b.writeUInt16BE(srcPort, o);
    b.writeUInt16BE(dstPort, o + 2);
    b.writeUInt16BE(UDP + len, o + 4);
    b.writeUInt16BE(0, o + 6); // checksum optional on IPv4
    o += UDP;
    b.set(payload.subarray(0, len), o);
    this.used = o + len;
    this.packets++;
    if (this.used >= FLUSH_AT) this.flush();
  }

  flush(): void {
    if (this.used > 0) writeSync(this.fd, this.buf, 0, this.used);
    this.used = 0;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    closeSync(this.fd);
  }
}
