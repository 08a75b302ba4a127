// One cold `pmi info` in a fresh process; prints the info JSON on stdout and {wall_ms, max_rss_mib} on stderr.
import { main } from '../../packages/cli/dist/main.js';

const t0 = performance.now();
const code = await main(['--json', '--source', process.argv[2], 'info']);
process.stderr.write(
  JSON.stringify({
    code,
    wall_ms: Math.round(performance.now() - t0),
    max_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
  }) + '\n',
);
