import { hex, rangesToJSON, totalSize, type PhysicalMemory } from '@pmi/core';

export interface SourceDescription {
  uri: string;
  kind: string;
  read_only: boolean;
  live: boolean;
  ranges: { start: string; end: string; size: number }[];
  total_bytes: number;
  total_hex: string;
  ideal_batch_size: number;
  max_in_flight: number;
  /** Kind-specific facts (file path and size, QEMU split, ELF notes, …) when the source offers them. */
  details?: Record<string, unknown>;
}

/** A JSON-ready description of a source (what `pmi info` prints). */
export function describeSource(mem: PhysicalMemory): SourceDescription {
  const i = mem.info;
  const d: SourceDescription = {
    uri: i.uri,
    kind: i.kind,
    read_only: i.readOnly,
    live: i.live,
    ranges: rangesToJSON(i.ranges),
    total_bytes: totalSize(i.ranges),
    total_hex: hex(totalSize(i.ranges)),
    ideal_batch_size: i.idealBatchSize,
    max_in_flight: i.maxInFlight,
  };
  const withDescribe = mem as PhysicalMemory & { describe?: () => Record<string, unknown> };
  if (typeof withDescribe.describe === 'function') d.details = withDescribe.describe();
  return d;
}
