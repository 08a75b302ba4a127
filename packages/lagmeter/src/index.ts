// lagmeter: cloud-gaming latency meter (see README.md).
export const LAGMETER_PACKAGE = 'lagmeter';
export * from './relay/index.js';
