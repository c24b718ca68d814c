// Each daemon answers GET /status on a loopback port with a JSON snapshot, read by `tidemark status`,
// and GET /metrics with the same figures in Prometheus text format (common/metrics.ts).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { writeFileDurable } from './durable.js';

/** Where a daemon records its status port, inside its state (or cache) folder, for `tidemark status`. */
export const STATUS_PORT_FILE = 'status-port';

export interface StatusServer {
  port: number;
  close(): Promise<void>;
}

/** An operator action (POST /<action>?k=v); loopback only, like the rest of this endpoint. */
export type StatusAction = (action: string, params: URLSearchParams) => Promise<unknown>;

/** What GET /metrics serves: a DaemonMetrics. */
export interface MetricsSource {
  readonly contentType: string;
  render(): Promise<string>;
}

export async function startStatusServer(host: string, port: number, stateDir: string, snapshot: () => unknown, act?: StatusAction, metrics?: MetricsSource): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(snapshot()));
    } else if (req.method === 'GET' && url.pathname === '/metrics' && metrics) {
      metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
        (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(e as Error).message}\n`),
      );
    } else if (req.method === 'POST' && act) {
      act(url.pathname.slice(1), url.searchParams).then(
        (out) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out)),
        (e: unknown) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: (e as { code?: string }).code ?? 'TM_ERR_IO', message: (e as Error).message })),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = (server.address() as AddressInfo).port;
  await writeFileDurable(path.join(stateDir, STATUS_PORT_FILE), String(bound));
  return {
    port: bound,
    // Gone with the daemon (a SIGKILL leaves it behind, so readers check that the port answers).
    close: () => new Promise((resolve) => server.close(() => void fsp.rm(path.join(stateDir, STATUS_PORT_FILE), { force: true }).then(() => resolve()))),
  };
}
