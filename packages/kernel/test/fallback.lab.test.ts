/**
 * File fallbacks (issue 4): when kallsyms is gone from memory, a System.map or an ISF with
 * link-time addresses still gets pmi to the same kernel facts — through VMCOREINFO's
 * KERNELOFFSET when present, else by the KASLR slide search. Truth: the guest's /proc/kallsyms
 * turned into the files a user would have (link-time addresses = runtime − slide).
 */
import {
  closeSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { openSource } from '@pmi/core';
import '@pmi/sources';
import type { GroundTruth } from '@pmi/lab';
import { discoverKernel, findVmcoreInfo, parseSystemMap, readIsfFile } from '../src/index.js';

const targets = inject('labTargets');
const scratch = mkdtempSync(join(tmpdir(), 'pmi-fallback-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe.each(targets.map((t) => [t.id, t] as const))('file fallbacks on %s', (_id, target) => {
  const truth = JSON.parse(readFileSync(target.truth_path, 'utf8')) as GroundTruth;
  const core = truth.kallsyms.filter((s) => s.module === undefined && s.type !== 'A' && s.type !== 'a');
  const textRuntime = BigInt(core.find((s) => s.name === '_text')!.address);
  const slide = textRuntime - 0xffffffff81000000n;
  const linkTime = core.map((s) => ({ ...s, link: BigInt(s.address) - slide }));

  async function zeroedCopy(name: string, alsoVmcoreinfo: boolean): Promise<string> {
    const mem = await openSource('raw:' + target.snapshot_path);
    const k = await discoverKernel(mem, { noTypes: true });
    const vmci = alsoVmcoreinfo ? await findVmcoreInfo(mem) : [];
    await mem.close();
    const copy = join(scratch, name);
    copyFileSync(target.snapshot_path, copy);
    const fd = openSync(copy, 'r+');
    writeSync(fd, Buffer.alloc(4096), 0, 4096, k.kallsyms!.layout.tables.tokenTable);
    for (const v of vmci) writeSync(fd, Buffer.alloc(v.raw.length), 0, v.raw.length, v.physAddress);
    closeSync(fd);
    return copy;
  }

  it('System.map + memory without kallsyms: same DTB, paging and slide (VMCOREINFO, then slide search)', async () => {
    const map = linkTime.map((s) => `${s.link.toString(16).padStart(16, '0')} ${s.type} ${s.name}`).join('\n') + '\n';
    const symbolFile = parseSystemMap(map);
    const ref = await (async () => {
      const mem = await openSource('raw:' + target.snapshot_path);
      try {
        return (await discoverKernel(mem, { noTypes: true })).facts;
      } finally {
        await mem.close();
      }
    })();
    for (const alsoVmcoreinfo of [false, true]) {
      const copy = await zeroedCopy(`${target.name}-${alsoVmcoreinfo}`, alsoVmcoreinfo);
      const mem = await openSource('raw:' + copy);
      try {
        await expect(discoverKernel(mem, { noTypes: true })).rejects.toMatchObject({ data: { stage: 'symbols' } });
        const k = await discoverKernel(mem, { noTypes: true, symbolFile, symbolFileName: 'System.map' });
        expect(k.facts.symbolSource).toBe('file');
        expect(k.facts.kaslrSlide).toBe(slide);
        expect(k.facts.dtb).toBe(ref.dtb);
        expect(k.facts.levels).toBe(ref.levels);
        expect(k.facts.physBase).toBe(ref.physBase);
        expect(k.facts.release).toBe(truth.uname_r);
        expect(k.facts.steps.find((s) => s.stage === 'phys_base')!.method).toMatch(
          alsoVmcoreinfo ? /slide search/ : /VMCOREINFO/,
        );
        // Rebased file symbols are the guest's runtime addresses.
        expect(k.symbols.addressOf('init_task')).toBe(BigInt(core.find((s) => s.name === 'init_task')!.address));
      } finally {
        await mem.close();
        rmSync(copy, { force: true });
      }
    }
  });

  it('ISF symbols (addresses above 2^53 as JSON numbers) load losslessly and agree with memory', async () => {
    const entries = linkTime
      .slice(0, 2000)
      .concat(linkTime.filter((s) => ['_text', 'init_top_pgt', 'linux_banner', 'init_task'].includes(s.name)));
    const json =
      '{"metadata":{"format":"6.2.0"},"base_types":{},"user_types":{},"enums":{},"symbols":{' +
      entries.map((s) => `${JSON.stringify(s.name)}:{"address":${s.link.toString(10)}}`).join(',') +
      '}}';
    const path = join(scratch, `${target.name}.isf.json`);
    writeFileSync(path, json);
    const isf = await readIsfFile(path);
    for (const s of entries.slice(0, 50)) expect(isf.symbols.addressOf(s.name)).toBe(s.link);
    const mem = await openSource('raw:' + target.snapshot_path);
    try {
      const k = await discoverKernel(mem, { noTypes: true, symbolFile: isf.symbols, symbolFileName: 'isf' });
      expect(k.facts.symbolSource).toBe('memory');
      expect(k.facts.warnings.filter((w) => /disagree/.test(w))).toEqual([]);
    } finally {
      await mem.close();
    }
  });
});
