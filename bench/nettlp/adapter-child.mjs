#!/usr/bin/env node
// The adapter for bench/nettlp/run.mjs when a variant needs options `pmi adapter` does not expose:
// the same startAdapter + raw: source as `pmi adapter`, configured by one JSON argument
// {file, listen, portBase, tags, mps, variant, spin?}; variant = io[+split], e.g. "native", "dgram+mps".
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { openSource } = await import(path.join(root, 'packages/core/dist/index.js'));
await import(path.join(root, 'packages/sources/dist/index.js'));
const { startAdapter } = await import(path.join(root, 'packages/nettlp/dist/index.js'));

const cfg = JSON.parse(process.argv[2]);
const [io, split = 'rcb'] = cfg.variant.split('+');
const source = await openSource(`raw:${cfg.file}`);
const adapter = await startAdapter({
  source,
  listen: cfg.listen,
  portBase: cfg.portBase,
  tags: cfg.tags,
  mps: cfg.mps,
  rcb: cfg.mps >= 4096 ? 128 : 64,
  io,
  split,
  spinUs: cfg.spin, // undefined = the adapter's default
});
process.stdout.write(
  `listening on ${adapter.address} ports ${adapter.ports.first}-${adapter.ports.last} io=${adapter.io}\n`,
);
const stop = async () => {
  await adapter.close();
  process.stderr.write(JSON.stringify({ event: 'exit', io: adapter.io, ...adapter.stats() }) + '\n');
  await source.close();
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
