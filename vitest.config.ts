import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

// Tests import workspace packages from source, so `vitest` needs no build step for them;
// tests that spawn the `pmi` binary need `tsc -b` first (the npm scripts do it).
const alias = {
  '@pmi/core': here('./packages/core/src/index.ts'),
  '@pmi/sources': here('./packages/sources/src/index.ts'),
  '@pmi/nettlp': here('./packages/nettlp/src/index.ts'),
  '@pmi/kernel': here('./packages/kernel/src/index.ts'),
  '@pmi/linux': here('./packages/linux/src/index.ts'),
  '@pmi/monitor': here('./packages/monitor/src/index.ts'),
  '@pmi/lab': here('./lab/src/index.ts'),
  lagmeter: here('./packages/lagmeter/src/index.ts'),
  '@pmi/cli': here('./packages/cli/src/index.ts'),
};

export default defineConfig({
  resolve: { alias },
  test: {
    projects: [
      {
        resolve: { alias },
        test: {
          name: 'unit',
          include: ['packages/**/*.test.ts', 'lab/src/**/*.test.ts'],
          exclude: [
            '**/node_modules/**',
            '**/dist/**',
            '**/*.lab.test.ts',
            'packages/lagmeter/test/calibration*.test.ts',
          ],
          testTimeout: 60_000,
        },
      },
      {
        // Integration tests against real QEMU guests; the global setup boots the kernel/paging
        // matrix once per run and shares the targets (and their RAM snapshots) across files.
        resolve: { alias },
        test: {
          name: 'lab',
          include: ['**/*.lab.test.ts'],
          exclude: ['**/node_modules/**', '**/dist/**'],
          globalSetup: ['lab/test/global-setup.ts'],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          fileParallelism: false,
        },
      },
      {
        // lagmeter calibration: real WebRTC in headless Chromium through the impairment relay. Timing
        // accuracy suffers from CPU contention, so `./run test` runs this project on its own, last.
        resolve: { alias },
        test: {
          name: 'lagmeter',
          include: ['packages/lagmeter/test/calibration*.test.ts'],
          exclude: ['**/node_modules/**', '**/dist/**'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
