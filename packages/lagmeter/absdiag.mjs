import { openLab, runPipeline, defaultConfig, analyze } from 'lagmeter';
const playout = process.argv[2] ?? 'adaptive';
const lab = await openLab({ playout });
for (let r = 0; r < 3; r++) {
  const cfg = defaultConfig({ w: 640, h: 360, fps: 30, warmupMs: 2000, seed: 7, inputIntervalMs: [5, 15], durationMs: 4000, capture: process.argv[3] });
  const raw = await runPipeline(cfg, lab);
  const s = analyze(raw, 'x').summary;
  console.log(playout, process.argv[3], r, 'abs', JSON.stringify(s.crosscheck.abs_capture_minus_pixel), 'rvfc', JSON.stringify(s.crosscheck.rvfc_minus_pixel), 'timing', JSON.stringify(s.crosscheck.timing_minus_pixel), 'e2e', s.e2e.median, 'capture stage', JSON.stringify(s.stages.capture?.median));
}
await lab.close();
