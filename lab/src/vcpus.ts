/**
 * QEMU's own view of each vCPU of a lab guest (ground truth for `pmi cpus`), read over QMP while the
 * guest is paused: `info registers -a` (HMP through `human-monitor-command`) for RIP, RSP, the GS
 * base, CPL and HLT; and, because QEMU's register dump has no KernelGSbase line (checked on QEMU
 * 7.2 and in current sources), the CPU state notes ("QEMU", QEMUCPUState) of a one-page
 * `dump-guest-memory` ELF for IA32_KERNEL_GS_BASE, cross-checked against the first on RIP and GS.
 *
 * In kernel mode (cpl 0) the GS base is that CPU's per-CPU base (`__per_cpu_offset[cpu]`); in user
 * mode (cpl 3) the kernel's base is parked in KernelGSbase (swapped in by `swapgs` on kernel entry)
 * and GS base is the task's own.
 */

/** One vCPU as QEMU sees it: addresses are lowercase "0x…" strings. */
export interface VcpuEntry {
  /** QEMU's CPU index (`CPU#N`), which is the guest's CPU number on these machines. */
  cpu: number;
  gs_base: string;
  kernel_gs_base: string;
  rip: string;
  rsp: string;
  /** Current privilege level: 0 kernel, 3 user. */
  cpl: number;
  /** In HLT (idle), waiting for an interrupt. */
  halted: boolean;
}

/** `<snapshot>.vcpus.json`. */
export interface VcpuListing {
  /** ISO time the registers were read (the guest paused, in the pause of the RAM copy). */
  collected_at: string;
  vcpus: VcpuEntry[];
}

/** What `info registers -a` gives per vCPU (kernel_gs_base only if this QEMU prints it). */
export interface InfoRegistersCpu {
  cpu: number;
  rip: string;
  rsp: string;
  gs_base: string;
  /** The selector and DPL of CS, as printed. */
  cs_selector: number;
  cs_dpl: number;
  cpl: number;
  halted: boolean;
  cr3: string;
  kernel_gs_base?: string;
}

const hex = (t: string): string => '0x' + BigInt('0x' + t).toString(16);

function field(block: string, re: RegExp, what: string, cpu: number): RegExpExecArray {
  const m = re.exec(block);
  if (!m) throw new Error(`info registers: no ${what} for CPU#${cpu}`);
  return m;
}

/**
 * Parse the HMP `info registers -a` text: one `CPU#N` block per vCPU with `RIP=`/`EIP=`,
 * `RSP=`/`ESP=`, `CPL=`, `HLT=`, the `GS =sel base limit flags` and `CS =… DPL=d` lines, `CR3=`
 * and (where a QEMU prints it) `KernelGSbase=`.
 */
export function parseInfoRegisters(text: string): InfoRegistersCpu[] {
  const lines = text.replace(/\r/g, '').split('\n');
  const blocks: { cpu: number; text: string[] }[] = [];
  for (const line of lines) {
    const m = /^CPU#(\d+)\s*$/.exec(line.trim());
    if (m) blocks.push({ cpu: Number(m[1]), text: [] });
    else if (blocks.length > 0) blocks[blocks.length - 1].text.push(line);
  }
  if (blocks.length === 0) throw new Error('info registers: no CPU#N header (expected `info registers -a` output)');
  return blocks.map(({ cpu, text: bl }) => {
    const b = bl.join('\n');
    const cs = field(b, /^CS =([0-9a-f]{4}) [0-9a-f]+ [0-9a-f]+ [0-9a-f]+ DPL=(\d)/im, 'CS', cpu);
    const out: InfoRegistersCpu = {
      cpu,
      rip: hex(field(b, /\b[RE]IP=([0-9a-f]+)/i, 'RIP', cpu)[1]),
      rsp: hex(field(b, /\b[RE]SP=([0-9a-f]+)/i, 'RSP', cpu)[1]),
      gs_base: hex(field(b, /^GS =[0-9a-f]{4} ([0-9a-f]+) /im, 'GS', cpu)[1]),
      cs_selector: parseInt(cs[1], 16),
      cs_dpl: Number(cs[2]),
      cpl: Number(field(b, /\bCPL=(\d)/, 'CPL', cpu)[1]),
      halted: field(b, /\bHLT=([01])/, 'HLT', cpu)[1] === '1',
      cr3: hex(field(b, /\bCR3=([0-9a-f]+)/i, 'CR3', cpu)[1]),
    };
    const k = /\bKernelGSbase=([0-9a-f]+)/i.exec(b);
    if (k) out.kernel_gs_base = hex(k[1]);
    return out;
  });
}

/** One vCPU from the CPU notes of a QEMU `dump-guest-memory` ELF (x86-64). */
export interface QemuCpuNote {
  /** NT_PRSTATUS pr_pid − 1 (QEMU writes cpu_index + 1 there). */
  cpu: number;
  rip: string;
  rsp: string;
  gs_base: string;
  /** QEMUCPUState.kernel_gs_base; undefined when this QEMU's note is too short to hold it. */
  kernel_gs_base?: string;
  /** DPL of CS (QEMUCPUState.cs.flags bits 13–14). */
  cs_dpl: number;
  cr3: string;
}

const NT_PRSTATUS = 1;
/** x86-64 elf_prstatus: pr_pid after siginfo (12) + cursig (2) + pad (2) + sigpend (8) + sighold (8). */
const PRSTATUS_PID = 32;
/** QEMUCPUState (target/i386/arch_dump.c, version 1): u32 version, u32 size, 16 GPRs, rip, rflags,
 * 10 segments of {u32 selector, limit, flags, pad; u64 base} (cs ds es fs gs ss ldt tr gdt idt),
 * cr[5], then (QEMU ≥ 5.0, present when size allows) kernel_gs_base. */
const QCS = {
  rsp: 8 + 6 * 8,
  rip: 8 + 16 * 8,
  seg: (i: number) => 8 + 18 * 8 + i * 24,
  cr: (i: number) => 8 + 18 * 8 + 10 * 24 + i * 8,
  kernelGsBase: 8 + 18 * 8 + 10 * 24 + 5 * 8,
} as const;
const SEG_CS = 0;
const SEG_GS = 4;

const u64hex = (b: Buffer, off: number): string => '0x' + b.readBigUInt64LE(off).toString(16);

/**
 * The per-vCPU CPU notes of a QEMU x86-64 ELF core (`dump-guest-memory`, ELFCLASS64): QEMU writes
 * every CPU's NT_PRSTATUS ("CORE", pr_pid = cpu_index + 1), then every CPU's QEMUCPUState ("QEMU",
 * type 0), both in CPU order; they are paired in that order.
 */
export function parseQemuCpuNotes(elf: Buffer): QemuCpuNote[] {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a little-endian ELFCLASS64 core (QEMU dumps x86-64 so)');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const pids: number[] = [];
  const states: Buffer[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) throw new Error('ELF program header out of range');
    if (elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const end = off + Number(elf.readBigUInt64LE(ph + 32));
    if (end > elf.length) throw new Error('ELF note segment out of range');
    for (let p = off; p + 12 <= end;) {
      const namesz = elf.readUInt32LE(p);
      const descsz = elf.readUInt32LE(p + 4);
      const type = elf.readUInt32LE(p + 8);
      const name = elf.toString('latin1', p + 12, p + 12 + Math.max(0, namesz - 1));
      const desc = p + 12 + Math.ceil(namesz / 4) * 4;
      if (desc + descsz > end) throw new Error('ELF note out of range');
      if (name === 'CORE' && type === NT_PRSTATUS) pids.push(elf.readInt32LE(desc + PRSTATUS_PID));
      else if (name === 'QEMU' && type === 0) states.push(elf.subarray(desc, desc + descsz));
      p = desc + Math.ceil(descsz / 4) * 4;
    }
  }
  if (states.length === 0) throw new Error('no QEMU CPU state notes in the dump');
  if (pids.length !== states.length) {
    throw new Error(`${pids.length} NT_PRSTATUS notes but ${states.length} QEMU CPU state notes`);
  }
  return states.map((s, i) => {
    const size = s.readUInt32LE(4);
    if (s.readUInt32LE(0) !== 1 || size > s.length || size < QCS.kernelGsBase) {
      throw new Error(`unknown QEMUCPUState (version ${s.readUInt32LE(0)}, size ${size})`);
    }
    const n: QemuCpuNote = {
      cpu: pids[i] - 1,
      rip: u64hex(s, QCS.rip),
      rsp: u64hex(s, QCS.rsp),
      gs_base: u64hex(s, QCS.seg(SEG_GS) + 16),
      cs_dpl: (s.readUInt32LE(QCS.seg(SEG_CS) + 8) >> 13) & 3,
      cr3: u64hex(s, QCS.cr(3)),
    };
    if (size >= QCS.kernelGsBase + 8) n.kernel_gs_base = u64hex(s, QCS.kernelGsBase);
    return n;
  });
}

/**
 * Join the two views into the vcpus.json rows (CPU order). They were read in one pause, so they
 * must agree on RIP, RSP, GS base and CS's DPL; any disagreement (or a vCPU missing from either,
 * or no KernelGSbase anywhere) is an error rather than a guess.
 */
export function joinVcpuViews(regs: readonly InfoRegistersCpu[], notes: readonly QemuCpuNote[]): VcpuEntry[] {
  if (regs.length !== notes.length) {
    throw new Error(`info registers shows ${regs.length} vCPUs, the dump ${notes.length}`);
  }
  return [...regs]
    .sort((a, b) => a.cpu - b.cpu)
    .map((r) => {
      const n = notes.find((x) => x.cpu === r.cpu);
      if (!n) throw new Error(`CPU#${r.cpu} has no CPU state note in the dump`);
      for (const k of ['rip', 'rsp', 'gs_base', 'cr3'] as const) {
        if (n[k] !== r[k]) throw new Error(`CPU#${r.cpu}: ${k} ${r[k]} in info registers but ${n[k]} in the dump`);
      }
      if (n.cs_dpl !== r.cs_dpl) throw new Error(`CPU#${r.cpu}: CS DPL ${r.cs_dpl} vs ${n.cs_dpl} in the dump`);
      const kernelGsBase = r.kernel_gs_base ?? n.kernel_gs_base;
      if (kernelGsBase === undefined) throw new Error(`CPU#${r.cpu}: QEMU reports no KernelGSbase`);
      if (r.kernel_gs_base !== undefined && n.kernel_gs_base !== undefined && r.kernel_gs_base !== n.kernel_gs_base) {
        throw new Error(`CPU#${r.cpu}: KernelGSbase ${r.kernel_gs_base} vs ${n.kernel_gs_base} in the dump`);
      }
      return {
        cpu: r.cpu,
        gs_base: r.gs_base,
        kernel_gs_base: kernelGsBase,
        rip: r.rip,
        rsp: r.rsp,
        cpl: r.cpl,
        halted: r.halted,
      };
    });
}
