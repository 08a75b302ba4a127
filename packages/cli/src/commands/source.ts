import { hex, rangesToJSON, totalSize, type PhysicalMemory } from '@pmi/core';
import { resolveSourceUri, withTarget, type GlobalOptions } from '../context.js';
import { printDocument, printRows } from '../output.js';

/** JSON shape of `pmi source`: what the target is and which physical ranges exist. */
export function describeTarget(mem: PhysicalMemory, via: string): Record<string, unknown> {
  const i = mem.info;
  return {
    uri: i.uri,
    kind: i.kind,
    chosen_by: via,
    read_only: i.readOnly,
    live: i.live,
    total_bytes: totalSize(i.ranges),
    max_address: i.ranges.length ? hex(i.ranges[i.ranges.length - 1].end) : '0x0',
    ideal_batch_size: i.idealBatchSize,
    max_in_flight: i.maxInFlight,
    ranges: rangesToJSON(i.ranges),
  };
}

export async function sourceCommand(opts: GlobalOptions & { ranges?: boolean }): Promise<number> {
  const { via } = await resolveSourceUri(opts);
  return withTarget(opts, async (mem) => {
    const doc = describeTarget(mem, via);
    if (opts.ranges && !opts.json) {
      printRows(
        doc.ranges as { start: string; end: string; size: number }[],
        [{ key: 'start' }, { key: 'end' }, { key: 'size', align: 'right' }],
        [],
        { json: false },
      );
      return 0;
    }
    if (!opts.json) {
      const { ranges, ...rest } = doc;
      printDocument(rest, { json: false });
      const list = ranges as { start: string; end: string; size: number }[];
      process.stdout.write(`ranges${' '.repeat(11)}${list.map((r) => `${r.start}-${r.end}`).join(' ')}\n`);
      return 0;
    }
    printDocument(doc, { json: true });
    return 0;
  });
}
