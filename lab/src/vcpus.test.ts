import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { joinVcpuViews, parseInfoRegisters, parseQemuCpuNotes, type QemuCpuNote } from './vcpus.js';

// Captured from one QEMU 7.2 pause of a 5.10 guest with two vCPUs (`info registers -a` and a
// one-page `dump-guest-memory` of the same pause): "idle" with both vCPUs in HLT, "user" with vCPU 1
// running a busy `sh` loop in user mode.
const fixture = (n: string) => readFileSync(new URL(`./__fixtures__/${n}`, import.meta.url));
const regs = (tag: string) => parseInfoRegisters(fixture(`info-registers-510-smp2-${tag}.txt`).toString('utf8'));
const notes = (tag: string) => parseQemuCpuNotes(fixture(`vcpu-notes-510-smp2-${tag}.elf`));

describe('info registers -a', () => {
  it('both vCPUs idle in the kernel: per-CPU GS bases, HLT', () => {
    expect(regs('idle')).toEqual([
      {
        cpu: 0,
        rip: '0xffffffff9531250e',
        rsp: '0xffffffff96003eb8',
        gs_base: '0xffff981d0f800000',
        cs_selector: 0x10,
        cs_dpl: 0,
        cpl: 0,
        halted: true,
        cr3: '0x228e000',
      },
      {
        cpu: 1,
        rip: '0xffffffff9531250e',
        rsp: '0xffffbc14c0083ef0',
        gs_base: '0xffff981d0f900000',
        cs_selector: 0x10,
        cs_dpl: 0,
        cpl: 0,
        halted: true,
        cr3: '0x21d2000',
      },
    ]);
  });

  it('a vCPU in user mode: CPL 3, the task GS base (0), not halted; no KernelGSbase line on this QEMU', () => {
    const [c0, c1] = regs('user');
    expect([c0.cpl, c0.halted, c0.gs_base]).toEqual([0, true, '0xffff981d0f800000']);
    expect(c1).toMatchObject({ cpu: 1, cpl: 3, cs_dpl: 3, cs_selector: 0x33, halted: false, gs_base: '0x0' });
    expect(c1.rip).toBe('0x455129');
    expect(c1.rsp).toBe('0x7ffe5845f878');
    expect(c1.kernel_gs_base).toBeUndefined();
  });

  it('32-bit register names, a KernelGSbase line where printed, errors', () => {
    const text = [
      '',
      'CPU#3',
      'EAX=00000000 EBX=00000000 ECX=00000000 EDX=00000663',
      'ESI=00000000 EDI=00000000 EBP=00000000 ESP=00001000',
      'EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1',
      'CS =f000 ffff0000 0000ffff 00009b00 DPL=0 CS16 [-RA]',
      'GS =0000 00000000 0000ffff 00009300',
      'CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000',
      'KernelGSbase=ffff888007a00000',
    ].join('\r\n');
    expect(parseInfoRegisters(text)).toEqual([
      {
        cpu: 3,
        rip: '0xfff0',
        rsp: '0x1000',
        gs_base: '0x0',
        cs_selector: 0xf000,
        cs_dpl: 0,
        cpl: 0,
        halted: true,
        cr3: '0x0',
        kernel_gs_base: '0xffff888007a00000',
      },
    ]);
    expect(() => parseInfoRegisters('RIP=0 CPL=0')).toThrow(/CPU#N/);
    expect(() => parseInfoRegisters('CPU#0\nRIP=1 CPL=0 HLT=0\n')).toThrow(/no CS for CPU#0/);
  });
});

describe('QEMU CPU state notes of dump-guest-memory', () => {
  it('pairs NT_PRSTATUS (cpu) with QEMUCPUState, and holds KernelGSbase', () => {
    const n = notes('idle');
    expect(n.map((x) => [x.cpu, x.rip, x.gs_base, x.cs_dpl])).toEqual([
      [0, '0xffffffff9531250e', '0xffff981d0f800000', 0],
      [1, '0xffffffff9531250e', '0xffff981d0f900000', 0],
    ]);
    // idle in the kernel after swapgs: the user GS base (0 for these busybox tasks) is parked
    expect(n.map((x) => x.kernel_gs_base)).toEqual(['0x0', '0x0']);
  });

  it('in user mode the kernel per-CPU base is the KernelGSbase: the same value as GS in kernel mode', () => {
    const [c0, c1] = notes('user');
    expect(c0.kernel_gs_base).toBe('0x0');
    expect(c1.gs_base).toBe('0x0');
    expect(c1.cs_dpl).toBe(3);
    // the same boot's idle capture: CPU 1's GS base in kernel mode
    expect(c1.kernel_gs_base).toBe(regs('idle')[1].gs_base);
    expect(c1.kernel_gs_base).toBe('0xffff981d0f900000');
  });

  it('rejects what is not a 64-bit QEMU core', () => {
    expect(() => parseQemuCpuNotes(Buffer.from('not an elf at all, not at all, not at all, not at all, no'))).toThrow(
      /not an ELF/,
    );
    const elf = Buffer.from(fixture('vcpu-notes-510-smp2-idle.elf'));
    elf[4] = 1;
    expect(() => parseQemuCpuNotes(elf)).toThrow(/ELFCLASS64/);
  });
});

describe('joinVcpuViews', () => {
  it('the vcpus.json rows: kernel_gs_base from the notes', () => {
    expect(joinVcpuViews(regs('user'), notes('user'))).toEqual([
      {
        cpu: 0,
        gs_base: '0xffff981d0f800000',
        kernel_gs_base: '0x0',
        rip: '0xffffffff9531250e',
        rsp: '0xffffffff96003eb8',
        cpl: 0,
        halted: true,
      },
      {
        cpu: 1,
        gs_base: '0x0',
        kernel_gs_base: '0xffff981d0f900000',
        rip: '0x455129',
        rsp: '0x7ffe5845f878',
        cpl: 3,
        halted: false,
      },
    ]);
  });

  it('views of different moments, missing vCPUs or no KernelGSbase are errors', () => {
    // idle registers with the user-mode notes (CPU 0 idles in both, but on another task's page tables)
    expect(() => joinVcpuViews(regs('idle'), notes('user'))).toThrow(
      /CPU#0: cr3 0x228e000 in info registers but 0x232e000/,
    );
    const cpu1Only = (tag: string) => regs(tag).filter((r) => r.cpu === 1);
    const notes1Only = (tag: string) => notes(tag).filter((n) => n.cpu === 1);
    expect(() => joinVcpuViews(cpu1Only('idle'), notes1Only('user'))).toThrow(/CPU#1: rip 0xffffffff9531250e/);
    expect(() => joinVcpuViews(regs('idle'), notes('idle').slice(0, 1))).toThrow(/2 vCPUs, the dump 1/);
    const renumbered = notes('idle').map((n) => ({ ...n, cpu: n.cpu + 1 }));
    expect(() => joinVcpuViews(regs('idle'), renumbered)).toThrow(/CPU#0 has no CPU state note/);
    const old: QemuCpuNote[] = notes('idle').map(({ kernel_gs_base: _k, ...n }) => n);
    expect(() => joinVcpuViews(regs('idle'), old)).toThrow(/no KernelGSbase/);
    const printed = regs('idle').map((r) => ({ ...r, kernel_gs_base: '0x1000' }));
    expect(() => joinVcpuViews(printed, notes('idle'))).toThrow(/KernelGSbase 0x1000 vs 0x0/);
  });
});
