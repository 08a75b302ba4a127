// lagmeter: cloud-gaming latency meter (see README.md).
export const LAGMETER_PACKAGE = 'lagmeter';
export { runPipeline, openLab, defaultConfig, CHROMIUM_FLAGS, localUdpEndpoint } from './pipeline.js';
export type { RunConfig, RawRun, Lab } from './pipeline.js';
export { analyze, parseTimingFrameInfo } from './measure.js';
export type { Analysis, Summary, FrameRecord, InputRecord, LagEvent, Stage } from './measure.js';
export { estimateOffset } from './clock.js';
export type { ClockSample, ClockEstimate } from './clock.js';
export { dist, median, bootstrapMedianCI, prng } from './stats.js';
export * from './relay/index.js';
export { formatSummary, writeRun } from './report.js';
