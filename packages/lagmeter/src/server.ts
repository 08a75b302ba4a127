// A tiny static HTTP server for the host and client pages (plain ES modules under src/pages/).
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join, normalize } from 'node:path';

/** src/pages, whether we run from src/ (vitest) or dist/ (the CLI). */
export const PAGES_DIR = fileURLToPath(new URL('../src/pages/', import.meta.url));

const HTML = (role: string) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>lagmeter ${role}</title>` +
  `<style>body{margin:0;background:#000}</style></head>` +
  `<body><script type="module" src="/${role}.js"></script></body></html>`;

export interface PageServer {
  url: string;
  close(): Promise<void>;
}

export async function startPageServer(): Promise<PageServer> {
  const server: Server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const role = path.match(/^\/(host|client)\.html$/)?.[1];
    if (role) {
      res.writeHead(200, { 'content-type': 'text/html' }).end(HTML(role));
      return;
    }
    const name = normalize(path).replace(/^\/+/, '');
    if (!/^[a-z]+\.js$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(PAGES_DIR, name));
      res.writeHead(200, { 'content-type': 'text/javascript', 'cache-control': 'no-store' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
