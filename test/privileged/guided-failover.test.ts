// The guided failover, reverse and failback from the website, in a real browser (playwright-core driving
// Chromium) over real daemons on XFS (reflink capture gives the points a planned drain needs): an operator
// starts a planned failover of vol1 and confirms each step. The drain and the recovery run through the
// daemons' operator channel; the reverse step shows the commands to run on the host, refuses to go on until
// the reverse daemons answer and have converged, and the test runs exactly what the page shows; the
// failback and the resume run through the channel again; the last step waits until the reverse daemons are
// stopped. The configuration server is SIGKILLed in the middle and the sequence goes on where it was. At
// the end the original volume and the forward replica both equal the failed-over volume as the application
// left it during the reversed phase, and every step is in the audit log.
// The unplanned sequence: the source site is lost (its agent and process server killed) after writes that
// never reached a point; the failover recovers the latest retained point; the site comes back, and the
// reverse command drains its agent before the reverse master target writes into the original volume; the
// failback and the forward resume (a checksum resync) end with every copy equal to the failed-over volume.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t, * as Tap from 'tap';
import type { Page } from 'playwright-core';
import { freePort, Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { issue } from '../../common/pki.js';
import { hashPassword } from '../../config-server/auth.js';
import type { GuidedKind } from '../../config-server/guided.js';
import { WEB_PORT_FILE } from '../../config-server/server.js';
import { reverseNames } from '../../master-target/failover/reverse-plan.js';
import { ARTIFACTS, launchChromium } from '../integration/config-server-lab.js';
import { makeImage, waitFor } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { sha256 } from './protected.js';
import { makeXfs, privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE_MIB = 32;
const PASSWORD = 'operator-pass-1';
const run = promisify(execFile);

/** Random writes of `bytes` at random block offsets, as an application would make them. */
let scatters = 0;
async function scatter(file: string, bytes: number): Promise<void> {
  const rng = new Rng(`guided-scatter:${scatters++}`);
  const fh = await fsp.open(file, 'r+');
  try {
    for (let done = 0; done < bytes; done += 4 * BS) await fh.write(rng.bytes(4 * BS), 0, 4 * BS, rng.int(0, (SIZE_MIB << 20) / BS - 4) * BS);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function guided(t: Tap.Test, kind: GuidedKind): Promise<void> {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const xfs = makeXfs(t, 300).mnt;
  const primary = path.join(xfs, 'primary');
  const secondary = path.join(xfs, 'secondary');
  await fsp.mkdir(primary);
  await fsp.mkdir(secondary);
  const source = path.join(primary, 'source.img');
  const replica = path.join(secondary, 'replica.img');
  await makeImage(source, SIZE_MIB, 12);
  const dir = tempDir(t);
  const lab = await Lab.create({
    dir, recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink' }, mt: { retention: { window: '1h' } } }],
    agent: { cycleIntervalMs: 300 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);

  // The configuration server watches the forward daemons and, as standby, the reverse ones (named as
  // `tidemark reverse` names them, in the folder its commands will use).
  const reverseDir = path.join(dir, 'reverse');
  const rdir = path.join(reverseDir, 'vol1');
  const rn = reverseNames({ agent: 'agent-1', masterTarget: 'mt-1' });
  const pki = path.join(dir, 'pki');
  await issue(pki, 'config-server', 'cs-1');
  const csConfig = path.join(dir, 'config-server.json');
  const csState = path.join(dir, 'cs-state');
  await fsp.writeFile(csConfig, JSON.stringify({
    name: 'cs-1', stateDir: 'cs-state', listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: 'pki/cs-1.crt', key: 'pki/cs-1.key' }, intervalMs: 500, recoveryDir: secondary,
    users: [{ name: 'olga', role: 'operator', passwordHash: await hashPassword(PASSWORD) }, { name: 'victor', role: 'viewer', passwordHash: await hashPassword(PASSWORD) }],
    failback: { dir: reverseDir, pki, psPort: await freePort(), mtPort: await freePort() },
    daemons: [
      { name: 'agent-1', role: 'agent', stateDir: 'agent-state', configFile: lab.configs.agent },
      { name: 'ps-1', role: 'process-server', stateDir: 'ps-cache' },
      { name: 'mt-1', role: 'master-target', stateDir: 'mt-state', configFile: lab.configs.mt },
      { name: rn.agent, role: 'agent', stateDir: path.join(rdir, 'agent-state'), standby: true },
      { name: rn.ps, role: 'process-server', stateDir: path.join(rdir, 'ps-cache'), standby: true },
      { name: rn.mt, role: 'master-target', stateDir: path.join(rdir, 'mt-state'), standby: true },
    ],
  }, null, 2));
  let port = 0;
  let cs = lab.spawn(['config-server', '--config', csConfig], 'cs');
  const startCs = async (): Promise<void> => {
    port = 0;
    await waitFor(async () => {
      if (cs.exitCode !== null) throw new Error(`the configuration server exited: ${(await fsp.readFile(path.join(dir, 'cs.log'), 'utf8')).slice(-2000)}`);
      return (port = Number(await fsp.readFile(path.join(csState, WEB_PORT_FILE), 'utf8').catch(() => '0'))) > 0;
    }, 30_000, 'the configuration server listens');
  };
  const killCs = async (): Promise<void> => {
    if (cs.exitCode !== null || cs.signalCode !== null) return;
    const gone = new Promise((r) => cs.once('exit', r));
    cs.kill('SIGKILL');
    await gone;
  };
  t.teardown(killCs);
  await startCs();
  const base = (): string => `https://127.0.0.1:${port}`;

  const browser = await launchChromium(t);
  const page: Page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  const login = async (): Promise<void> => {
    await page.goto(`${base()}/login`);
    await page.fill('input[name=user]', 'olga');
    await page.fill('input[name=password]', PASSWORD);
    await Promise.all([page.waitForURL(`${base()}/`), page.click('#login')]);
  };
  await login();
  await waitFor(async () => {
    await page.goto(`${base()}/guided`);
    return (await page.locator('[data-start-planned="vol1"]').count()) === 1;
  }, 30_000, 'vol1 can be failed over from the guided page');

  if (kind === 'planned') {
    // A viewer sees the page but cannot begin a sequence, even by posting the form directly.
    const viewer: Page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    await viewer.goto(`${base()}/login`);
    await viewer.fill('input[name=user]', 'victor');
    await viewer.fill('input[name=password]', PASSWORD);
    await Promise.all([viewer.waitForURL(`${base()}/`), viewer.click('#login')]);
    await viewer.goto(`${base()}/guided`);
    t.equal(await viewer.locator('[data-start-planned]').count(), 0, 'a viewer is offered no failover');
    const csrf = ((await (await viewer.request.get(`${base()}/api/session`)).json()) as { csrf: string }).csrf;
    const posted = await viewer.request.post(`${base()}/guided/start/vol1/planned`, { form: { csrf, confirm: 'planned' }, headers: { origin: base() }, maxRedirects: 0 });
    t.equal(posted.status(), 403, 'a viewer\'s posted start is refused');
    // The application wrote, then was stopped: begin.
    await scatter(source, 1 << 20);
  } else {
    // The application wrote and its points reached the master target; then it wrote more, and the source
    // site was lost before those writes made a point.
    await scatter(source, 1 << 20);
    await lab.waitConverged(Date.now(), 120_000);
    await lab.kill('agent');
    await lab.kill('ps');
    await scatter(source, 1 << 20);
  }
  await page.click(`[data-start-${kind}="vol1"]`);
  t.match(await page.textContent('#confirm-what'), new RegExp(`${kind.toUpperCase()} failover.*vol1`, 's'), 'the sequence asks for confirmation');
  await Promise.all([page.waitForURL(/\/guided\/\d+$/), page.click('#confirm')]);
  const id = Number(/(\d+)$/.exec(page.url())![1]);
  const seqUrl = (): string => `${base()}/guided/${id}`; // the port changes when the server restarts

  const stepState = async (step: string): Promise<string | null> => {
    await page.goto(seqUrl());
    return page.locator(`tr[data-step="${step}"]`).getAttribute('data-state');
  };
  /** Confirm the next step on its page; the answer page (the sequence again, or a refusal). */
  const confirm = async (step: string): Promise<void> => {
    await page.goto(seqUrl());
    t.equal(await page.getAttribute('#next', 'data-step'), step, `the page offers "${step}" next`);
    await Promise.all([page.waitForURL(/\/confirm\//), page.click('#next')]);
    // Either back on the sequence's page, or a refusal on the step's own address.
    await Promise.all([page.waitForURL(/\/guided\/\d+(\/step\/[a-z-]+)?$/), page.click('#confirm')]);
  };
  const done = async (step: string, ms: number): Promise<void> => {
    await waitFor(async () => {
      const s = await stepState(step);
      if (s === 'failed') throw new Error(`step ${step} failed: ${await page.textContent(`tr[data-step="${step}"] .detail`)}`);
      return s === 'done';
    }, ms, `step ${step} done`);
  };

  if (kind === 'planned') {
    await confirm('drain');
    await done('drain', 120_000);
  } else t.equal(await stepState('drain'), 'skipped', 'unplanned: the lost source is not drained');
  await confirm('failover');
  await done('failover', 120_000);
  const failedOver = (await page.textContent('#failed-over'))!;
  t.ok(failedOver.startsWith(secondary), `the failed-over volume is under recoveryDir: ${failedOver}`);
  if (kind === 'planned') {
    t.equal(await sha256(failedOver), await sha256(source), 'the failed-over volume equals the source at its final point: nothing lost');
    // The configuration server dies and comes back: the sequence is where it was.
    await killCs();
    await fsp.rm(path.join(csState, WEB_PORT_FILE), { force: true }); // a SIGKILL leaves the old port behind
    cs = lab.spawn(['config-server', '--config', csConfig], 'cs');
    await startCs();
    await login();
    t.equal(await stepState('failover'), 'done', 'after a SIGKILL of the configuration server the sequence is still at its step');
  } else {
    t.equal(await sha256(failedOver), await sha256(replica), 'the failed-over volume is the latest point the master target applied');
    t.not(await sha256(failedOver), await sha256(source), 'the writes made after that point are not in it (the site was lost)');
  }

  // The application runs on the failed-over volume.
  await scatter(failedOver, 2 << 20);
  // Reverse: the page says what to run; until the reverse daemons run and converge it does not go on.
  await page.goto(seqUrl());
  const commands = (await page.textContent('#reverse-commands'))!.split('\n');
  t.match(commands[0], new RegExp(`^tidemark reverse vol1 --config ${lab.configs.mt} --agent-config ${lab.configs.agent} --dir ${rdir} --source ${failedOver}`), 'the page shows the reverse command');
  t.match(await page.textContent('#waiting'), /not answering yet/, 'the page waits for the reverse daemons');
  await confirm('reverse');
  t.match(await page.textContent('#detail'), /not yet: .*not answering/, 'going on before the reverse daemons run is refused, saying why');
  if (kind === 'unplanned') {
    // The primary site is back: its daemons start as services do, and its agent protects the volume again.
    lab.start('ps');
    lab.start('agent');
    await waitFor(async () => (await lab.status('agent')) !== null, 60_000, 'the forward agent answers again');
  }
  const rv = await run('/bin/sh', ['-c', commands[0]!.replace(/^tidemark /, `'${process.execPath}' '${TIDEMARK_BIN}' `)], { cwd: dir });
  t.match(rv.stdout, /reverse replication of vol1 set up/, 'the reverse command as shown ran');
  if (kind === 'unplanned') t.match(rv.stdout, /was still protecting vol1: drained now/, 'the reverse command drained the forward agent before the original volume becomes a replica');
  const rev = Lab.existing({ dir: rdir, volumes: [] });
  t.teardown(() => rev.stopAll());
  for (const [name, file] of [['mt', 'master-target.json'], ['ps', 'process-server.json'], ['agent', 'agent.json']] as const) {
    t.ok(commands.some((c) => c.includes(path.join(rdir, file))), `the page says to start the reverse ${name} with ${file}`);
    rev.start(name);
  }
  await waitFor(async () => {
    await page.goto(seqUrl());
    return (await page.locator('#waiting').count()) === 0;
  }, 180_000, 'the collected status shows the reverse pair converged');
  await confirm('reverse');
  await done('reverse', 10_000);

  // The reversed phase: the application writes more; then it is stopped and the volume fails back.
  await scatter(failedOver, 1 << 20);
  await confirm('failback');
  await done('failback', 180_000);
  t.equal(await sha256(source), await sha256(failedOver), 'the original volume holds the failed-over volume as the application left it');
  await confirm('resume');
  await done('resume', 60_000);
  await confirm('stop-reverse');
  t.match(await page.textContent('#detail'), /not yet: still answering/, 'the sequence does not end while the reverse daemons run');
  await rev.stopAll();
  await waitFor(async () => {
    await page.goto(seqUrl());
    return (await page.locator('#waiting').count()) === 0;
  }, 30_000, 'the collected status shows the reverse daemons stopped');
  await confirm('stop-reverse');
  await page.goto(seqUrl());
  t.equal(await page.getAttribute('#guided-state', 'data-state'), 'done', 'the sequence is complete');
  await fsp.mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `guided-failback-${kind}.png`), fullPage: true });

  // Forward again: the replica converges on the original volume, which is the reversed phase's data.
  await lab.waitConverged(Date.now(), 180_000);
  t.equal(await sha256(replica), await sha256(failedOver), 'after failback the forward replica equals what the application wrote during the reversed phase');

  // Every step in the audit log, by olga, and the daemons logged the actions.
  await page.goto(`${base()}/audit`);
  const audit = await page.content();
  for (const s of [...(kind === 'planned' ? ['drain'] : []), 'failover', 'reverse', 'failback', 'resume', 'stop-reverse']) t.match(audit, new RegExp(`data-audit="guided ${s}" data-result="ok"`), `audit: guided ${s} ok`);
  t.match(audit, /data-audit="guided reverse" data-result="refused"/, 'audit: the early reverse confirmation refused');
  if (kind === 'planned') t.match(audit, /data-audit="guided planned failover" data-result="refused"/, 'audit: the viewer\'s attempt refused');
}

t.test('guided planned failover, reverse and failback from the website', (t) => guided(t, 'planned'));
t.test('guided unplanned failover (the source site lost), reverse and failback from the website', (t) => guided(t, 'unplanned'));
