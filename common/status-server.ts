// Each daemon answers GET /status on a loopback port with a JSON snapshot, read by `tidemark status`,
// and GET /metrics with the same figures in Prometheus text format (common/metrics.ts). Read-only: operator
// actions go through the operator socket (common/operator-socket.ts). Any local user can read it, so it
// refuses what only a web page would send: an Origin header (a cross-origin fetch or form) and a Host
// that is not a loopback name (DNS rebinding: a page's own name resolved to 127.0.0.1).
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

/** What GET /metrics serves: a DaemonMetrics. */
export interface MetricsSource {
  readonly contentType: string;
  render(): Promise<string>;
}

const LOOPBACK_HOST = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(:\d{1,5})?$/i;

/** Why a request may not be answered, or null. Browsers always send Host; curl and Prometheus send a loopback one. */
export function refusal(req: http.IncomingMessage): string | null {
  if (req.headers.origin !== undefined) return 'requests from web pages (an Origin header) are refused';
  const host = req.headers.host;
  if (host !== undefined && !LOOPBACK_HOST.test(host)) return 'only a loopback Host (127.0.0.1, localhost, [::1]) is answered';
  if (req.method !== 'GET' && req.method !== 'HEAD') return 'the status port is read-only: operator actions go through the operator socket (run the tidemark command as root)';
  return null;
}

const forbidden = (res: http.ServerResponse, why: string): void => {
  res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'TM_ERR_FORBIDDEN', message: why }));
};

export async function startStatusServer(host: string, port: number, stateDir: string, snapshot: () => unknown, metrics?: MetricsSource): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    const why = refusal(req);
    if (why !== null) {
      forbidden(res, why);
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(snapshot()));
    } else if (url.pathname === '/metrics' && metrics) {
      metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
        (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(e as Error).message}\n`),
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
