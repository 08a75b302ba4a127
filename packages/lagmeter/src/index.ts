// lagmeter: cloud-gaming latency meter (see README.md).
export const LAGMETER_PACKAGE = 'lagmeter';
export {
  runPipeline,
  openLab,
  defaultConfig,
  CHROMIUM_FLAGS,
  ZERO_PLAYOUT_DELAY_TRIAL,
  localUdpEndpoint,
} from './pipeline.js';
export type {
  RunConfig,
  RawRun,
  Lab,
  LabOptions,
  Playout,
  ScheduleStep,
  SwitchRecord,
  PipelineOptions,
} from './pipeline.js';
export { runInterleaved, pairedDelta, pairedError, interleaveOrder, formatInterleaved, METRICS } from './interleave.js';
export type {
  Condition,
  InterleaveOptions,
  InterleavedResult,
  Segment,
  PairedDelta,
  ConditionStats,
  Metric,
} from './interleave.js';
export { analyze, parseTimingFrameInfo } from './measure.js';
export type { Analysis, AnalyzeOptions, Summary, FrameRecord, InputRecord, LagEvent, Stage } from './measure.js';
export { RTCP_STALE_MS } from './measure.js';
export { estimateOffset } from './clock.js';
export type { ClockSample, ClockEstimate } from './clock.js';
export { dist, median, medianCI, bootstrapMedianCI, prng } from './stats.js';
export * from './relay/index.js';
export { formatSummary, writeRun } from './report.js';
