// Each daemon answers GET /status on a loopback port with a JSON snapshot, read by `tidemark status`.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { writeFileDurable } from './durable.js';

/** Where a daemon records its status port, inside its state (or cache) folder, for `tidemark status`. */
export const STATUS_PORT_FILE = 'status-port';

export interface StatusServer {
  port: number;
  close(): Promise<void>;
}

export async function startStatusServer(host: string, port: number, stateDir: string, snapshot: () => unknown): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(snapshot()));
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
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
