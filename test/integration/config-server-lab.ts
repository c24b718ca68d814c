// Shared by the configuration server's tests: a lab of real daemons on loopback, a configuration server
// over it (a child process, so it can be SIGKILLed), and a headless Chromium through playwright-core.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import type { ChildProcess } from 'node:child_process';
import { chromium, type Browser } from 'playwright-core';
import { Lab } from '../../lab/lab.js';
import { issue } from '../../common/pki.js';
import { hashPassword } from '../../config-server/auth.js';
import { WEB_PORT_FILE } from '../../config-server/server.js';
import { makeImage, waitFor } from './helpers.js';

export const CHROMIUM = process.env.TIDEMARK_CHROMIUM ?? '/usr/bin/chromium';
/** Screenshots land here (tmp/ is ignored by git); CI keeps the folder as an artifact. */
export const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../tmp/artifacts/config-server');

export const PASSWORDS = { op: 'operator-pass-1', view: 'viewer-pass-1' } as const;

export interface CsLab {
  lab: Lab;
  dir: string;
  source: string;
  replica: string;
  /** The second volume's (vol2). */
  source2: string;
  replica2: string;
  csConfig: string;
  csState: string;
  cs: ChildProcess | null;
  url: () => string;
  startCs(): Promise<void>;
  killCs(): Promise<void>;
}

export async function csLab(t: Test, dir: string, opts: { intervalMs: number; csExtra?: Record<string, unknown>; agent?: Record<string, unknown>; ps?: Record<string, unknown>; mt?: Record<string, unknown> }): Promise<CsLab> {
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  const source2 = path.join(dir, 'source2.img');
  const replica2 = path.join(dir, 'replica2.img');
  await makeImage(source, 8, 4);
  await makeImage(source2, 4, 2);
  const volume = (id: string, src: string, rep: string) => ({ id, source: src, replica: rep, agent: { capture: 'script', script: { pre: 'true', post: 'true', tag: 'app-cycle', timeoutMs: 5000 } }, mt: { retention: { window: '1h' } } });
  // Script capture: every cycle's point is app-consistent and tagged, so the timeline has tags and a test
  // failover has a point to expose; retention keeps the points.
  const lab = await Lab.create({
    dir,
    volumes: [volume('vol1', source, replica), volume('vol2', source2, replica2)],
    agent: { cycleIntervalMs: 500, ...opts.agent },
    ...(opts.ps ? { ps: opts.ps } : {}),
    ...(opts.mt ? { mt: opts.mt } : {}),
  });
  t.teardown(() => lab.stopAll());
  await issue(path.join(dir, 'pki'), 'config-server', 'cs-1');
  const csConfig = path.join(dir, 'config-server.json');
  const csState = path.join(dir, 'cs-state');
  await fsp.writeFile(csConfig, JSON.stringify({
    name: 'cs-1',
    stateDir: 'cs-state',
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: 'pki/cs-1.crt', key: 'pki/cs-1.key' },
    intervalMs: opts.intervalMs,
    recoveryDir: 'recovered',
    users: [
      { name: 'olga', role: 'operator', passwordHash: await hashPassword(PASSWORDS.op) },
      { name: 'victor', role: 'viewer', passwordHash: await hashPassword(PASSWORDS.view) },
    ],
    daemons: [
      { name: 'agent-1', role: 'agent', stateDir: 'agent-state' },
      { name: 'ps-1', role: 'process-server', stateDir: 'ps-cache' },
      { name: 'mt-1', role: 'master-target', stateDir: 'mt-state' },
    ],
    ...opts.csExtra,
  }, null, 2));
  await fsp.mkdir(path.join(dir, 'recovered'));
  let port = 0;
  const c: CsLab = {
    lab, dir, source, replica, source2, replica2, csConfig, csState, cs: null,
    url: () => `https://127.0.0.1:${port}`,
    async startCs() {
      await fsp.rm(path.join(csState, WEB_PORT_FILE), { force: true });
      c.cs = lab.spawn(['config-server', '--config', csConfig], 'cs');
      await waitFor(async () => (port = Number(await fsp.readFile(path.join(csState, WEB_PORT_FILE), 'utf8').catch(() => '0'))) > 0, 30_000, 'the configuration server listens');
    },
    async killCs() {
      const child = c.cs;
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    },
  };
  t.teardown(() => c.killCs());
  return c;
}

export async function launchChromium(t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  await fsp.mkdir(ARTIFACTS, { recursive: true });
  return browser;
}
