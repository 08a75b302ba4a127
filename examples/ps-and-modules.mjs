// Library example: the same views as `pmi ps` / `pmi lsmod`, from any source URI.
//   npm run build && node examples/ps-and-modules.mjs qemu:/dev/shm/pmi-lab-NAME.ram
import { openSource } from '@pmi/core';
import '@pmi/sources'; // raw:, qemu:, lime:, elf:, bare paths
import '@pmi/nettlp'; // nettlp://
import { discoverKernel, KernelObjects } from '@pmi/kernel';
import { iterateTasks, listModules } from '@pmi/linux';

const mem = await openSource(process.argv[2] ?? process.env.PMI_SOURCE);
try {
  const kernel = await discoverKernel(mem); // kallsyms + BTF + page tables, from memory alone
  console.log(`${kernel.facts.release}, ${kernel.facts.levels}-level paging`);
  const k = KernelObjects.from(kernel);
  // async iterable of row chunks: large process lists stream instead of piling up
  for await (const rows of iterateTasks(k, { onWarning: (w) => console.warn('warning:', w) })) {
    for (const t of rows) console.log(t.pid, t.ppid, t.uid, t.comm, t.cmdline);
  }
  for (const m of (await listModules(k)).rows) console.log(m.name, m.size, m.state);
} finally {
  await mem.close();
}
