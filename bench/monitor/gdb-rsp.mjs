// A tiny GDB Remote Serial Protocol client for bench/monitor/run.mjs: just what the
// instruction-level variants need from QEMU's gdbstub — write watchpoints (Z2), a breakpoint (Z0)
// that is stepped over and continued automatically on every hit (what `gdb -batch` with
// `commands; silent; continue; end` does, without gdb's own cost), interrupt and detach.
//
//   const g = await GdbRsp.connect(1234);   // QEMU stops the VM when a debugger connects
//   await g.cmd('Z2,ffffffff81e00000,1000'); // 'OK'
//   g.resume();                              // continue; breakpoint hits are handled here
//   ...
//   await g.interrupt();                     // stop (0x03), e.g. to change breakpoints
//   await g.detach();                        // QEMU removes every gdb breakpoint and resumes
import net from 'node:net';

const checksum = (s) => {
  let c = 0;
  for (let i = 0; i < s.length; i++) c = (c + s.charCodeAt(i)) & 0xff;
  return c.toString(16).padStart(2, '0');
};

export class GdbRsp {
  /** @param {net.Socket} sock */
  constructor(sock) {
    this.sock = sock;
    this.buf = '';
    this.ack = true;
    this.waiters = [];
    this.running = false;
    /** Breakpoint address (hex, no 0x) stepped over and continued on every hit. */
    this.autoBreak = undefined;
    this.hits = 0;
    this.watchHits = 0;
    this.stopping = false;
    this.stepping = false;
    this.inChain = false;
    this.onStopped = undefined;
    this.unexpected = undefined;
    this.lastWatch = undefined;
    this.dropped = 0;
    this.error = undefined;
    sock.setNoDelay(true);
    sock.on('data', (d) => this.onData(d.toString('latin1')));
    sock.on('error', (e) => (this.error = e));
  }

  static connect(port, host = '127.0.0.1', timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, host);
      const t = setTimeout(() => {
        sock.destroy();
        reject(new Error(`gdbstub ${host}:${port}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      sock.once('connect', async () => {
        clearTimeout(t);
        const g = new GdbRsp(sock);
        try {
          // QEMU stops the VM on connect and may announce it with an unsolicited stop reply: let it
          // arrive (no waiter: dropped) before the first command
          await new Promise((r) => setTimeout(r, 300));
          const r = await g.cmd('QStartNoAckMode');
          if (r === 'OK') g.ack = false;
          await g.cmd('?'); // the stop reply for the connect-time stop
          resolve(g);
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  send(payload) {
    this.sock.write(`$${payload}#${checksum(payload)}`);
  }

  onData(s) {
    this.buf += s;
    for (;;) {
      // acks and anything before a packet start are skipped
      const start = this.buf.indexOf('$');
      if (start < 0) {
        this.buf = '';
        return;
      }
      const end = this.buf.indexOf('#', start);
      if (end < 0 || this.buf.length < end + 3) {
        this.buf = this.buf.slice(start);
        return;
      }
      const payload = this.buf.slice(start + 1, end);
      this.buf = this.buf.slice(end + 3);
      if (this.ack) this.sock.write('+');
      this.onPacket(payload);
    }
  }

  onPacket(p) {
    const isStop = /^[ST][0-9a-fA-F]{2}/.test(p);
    if (isStop && this.running && !this.stepping) {
      this.running = false;
      if (this.stopping) return this.stopped();
      if (p.includes('watch:')) {
        // a guest write into a watched region: counted (the detection), then continued
        this.watchHits++;
        this.lastWatch = p;
        this.resume();
        return;
      }
      if (this.autoBreak) {
        // our breakpoint: remove, step one instruction, re-insert, continue (gdb's own dance)
        this.hits++;
        this.stepOver().catch((e) => (this.error = e));
        return;
      }
      this.unexpected = p;
      return;
    }
    // replies pair with commands in order; a stop reply only answers '?' or 's'
    const i = this.waiters.findIndex((w) => w.stop === isStop);
    if (i < 0) {
      this.dropped++;
      return;
    }
    this.waiters.splice(i, 1)[0].resolve(p);
  }

  stopped() {
    const r = this.onStopped;
    this.onStopped = undefined;
    r?.();
  }

  /** Send a packet and wait for its reply. */
  cmd(payload, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gdbstub: no reply to ${payload} in ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        stop: payload === '?' || payload === 's' || payload === 'c',
        resolve: (p) => {
          clearTimeout(t);
          resolve(p);
        },
      });
      this.send(payload);
    });
  }

  async stepOver() {
    const a = this.autoBreak;
    this.inChain = true;
    try {
      await this.cmd(`z0,${a},1`);
      this.stepping = true;
      this.running = true;
      const r = await this.cmd('s'); // the stop reply after one instruction
      this.running = false;
      this.stepping = false;
      if (!/^[ST]/.test(r)) throw new Error(`gdbstub: step answered ${r}`);
      await this.cmd(`Z0,${a},1`);
    } finally {
      this.inChain = false;
    }
    if (this.stopping) return this.stopped();
    this.running = true;
    this.send('c');
  }

  /** Continue (no reply until the next stop). */
  resume() {
    this.stopping = false;
    this.running = true;
    this.send('c');
  }

  /** Stop a running target (0x03) and wait until it is stopped. */
  interrupt(timeoutMs = 10_000) {
    if (!this.running && !this.inChain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gdbstub: no stop reply in ${timeoutMs} ms`)), timeoutMs);
      this.stopping = true;
      this.onStopped = () => {
        clearTimeout(t);
        resolve();
      };
      if (this.running && !this.stepping) this.sock.write('\x03');
    });
  }

  async detach() {
    const r = await this.cmd('D').catch(() => 'none');
    this.sock.end();
    return r;
  }
}
