// The configuration server end to end, in a real browser (playwright-core driving Debian's Chromium) over
// real daemons on loopback: log in, watch a volume converge (RPO and bytes on the page are what the master
// target's /status says), a daemon that stops answering shows as down with its cause within one interval,
// a viewer cannot act, a cross-site form is refused, a test failover runs from the page and is cleaned up,
// and the store keeps history and audit across a SIGKILL.
import { promises as fsp } from 'node:fs';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import type { Page } from 'playwright-core';
import { TIDEMARK_BIN } from '../../lab/lab.js';
import { ARTIFACTS, csLab, launchChromium, PASSWORDS } from './config-server-lab.js';
import { scratchDir, sha256, startWriter, waitFor } from './helpers.js';

const INTERVAL_MS = 1000;

async function login(page: Page, base: string, user: string, password: string): Promise<void> {
  await page.goto(`${base}/login`);
  await page.fill('input[name=user]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('#login')]);
}

/** A cell's machine-readable value on the page. */
const cell = (page: Page, row: string, key: string): Promise<string | null> => page.locator(`#${row} [data-k="${key}"]`).getAttribute('data-v', { timeout: 1000 }).catch(() => null);

t.test('configuration server website over real daemons', async (t) => {
  const dir = await scratchDir(t, 'cs-web');
  // A two-group plan: the database first (a pre script, then a person approves), then the application
  // (a wait, then a post script). The scripts leave files behind, so the test sees they ran and in order.
  const marks = path.join(dir, 'marks');
  const mark = (name: string): string[] => ['/bin/sh', '-c', `echo "$TIDEMARK_PLAN $TIDEMARK_PLAN_GROUP $TIDEMARK_PLAN_TEST" >> ${marks}; echo ${name}`];
  const plans = [{ name: 'two-tier', groups: [
    { name: 'db', volumes: [{ id: 'vol1', masterTarget: 'mt-1' }], pre: [{ kind: 'script', name: 'stop replication jobs', run: mark('pre-db') }], post: [{ kind: 'approval', name: 'database checked', prompt: 'is the database up?' }] },
    { name: 'app', volumes: [{ id: 'vol2', masterTarget: 'mt-1' }], pre: [{ kind: 'wait', name: 'let the database settle', ms: 200 }], post: [{ kind: 'script', name: 'smoke test', run: mark('post-app') }] },
  ] }, { name: 'quick', groups: [{ name: 'all', volumes: [{ id: 'vol2', masterTarget: 'mt-1' }] }] }];
  const c = await csLab(t, dir, { intervalMs: INTERVAL_MS, csExtra: { plans } });
  const { lab } = c;
  lab.start('mt');
  lab.start('ps');
  await c.startCs();
  const browser = await launchChromium(t);
  const base = c.url();

  // --- log in (a wrong password first), watch the volume converge while a writer runs, then stop it.
  const op = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  await op.goto(`${base}/login`);
  await op.fill('input[name=user]', 'olga');
  await op.fill('input[name=password]', 'wrong');
  await op.click('#login');
  t.match(await op.textContent('#login-error'), /Wrong user or password/, 'a wrong password is refused');
  await login(op, base, 'olga', PASSWORDS.op);
  t.equal(await op.textContent('#who'), 'olga (operator)', 'logged in as an operator');
  // The agent starts after the page is drawn: its volumes are drawn under "(no agent)" first, and must move
  // under their machine once it answers (the page once kept them where they were first drawn).
  await waitFor(async () => (await op.locator('section[data-machine="(no agent)"] tr#vol-vol1').count()) === 1, 30_000, 'vol1 drawn before its agent answers');
  lab.start('agent');
  const writer = startWriter(c.source, 8 << 20, 30);
  t.teardown(() => writer.stop());
  await waitFor(async () => Number(await cell(op, 'vol-vol1', 'appliedSeq')) > 0, 60_000, 'the fleet page shows differentials applied');
  await writer.stop();
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(c.replica), await sha256(c.source), 'the replica equals the source');
  t.equal(await sha256(c.replica2), await sha256(c.source2), 'the second replica equals its source');
  const mt = (await lab.status('mt'))!;
  const mv = (mt.volumes as Record<string, unknown>[]).find((v) => v.id === 'vol1')!;
  const lastPoint = mv.lastAppPoint as { seq: number; atMs: number };
  // The page refreshes itself; wait for it to show exactly what the master target says.
  await waitFor(async () => Number(await cell(op, 'vol-vol1', 'appliedSeq')) === mv.appliedSeq && Number(await cell(op, 'vol-vol1', 'appliedBytes')) === mv.appliedBytes
    && Number(await cell(op, 'vol-vol1', 'app')) === lastPoint.atMs, 20_000, 'the fleet page matches the master target\'s /status');
  t.pass(`fleet page: applied #${String(mv.appliedSeq)}, ${String(mv.appliedBytes)} bytes, newest point #${lastPoint.seq} — as /status says`);
  const rpo = Number(await cell(op, 'vol-vol1', 'rpo'));
  t.ok(rpo >= 0 && rpo <= Date.now() - lastPoint.atMs + 1000, `RPO on the page (${rpo} ms) is the age of the newest point`);
  t.equal(await cell(op, 'vol-vol1', 'health'), 'ok', 'health ok');
  // Under load the second volume's row may come with a later refresh: wait for it, bounded.
  const rows = async (): Promise<number> => op.locator('#machine-agent-1 tr[id^="vol-"]').count();
  await waitFor(async () => (await rows()) === 2, 20_000, 'both of agent-1\'s volumes on the fleet page').catch(() => {});
  t.equal(await rows(), 2, 'the fleet page groups volumes per protected machine: agent-1 with its two');
  t.equal(await cell(op, 'machine-agent-1', 'volumes'), '2', 'its summary counts them');
  // The page's refresh updates the summary with the rows (it once wrote it into the last row's health
  // cell instead, leaving the summary as first drawn): wait for it, bounded, without reloading.
  const summary = async (): Promise<string | null> => cell(op, 'machine-agent-1 h3', 'health');
  await waitFor(async () => (await summary()) === 'ok', 20_000, 'the machine summary to say all are ok').catch(() => {});
  t.equal(await summary(), 'ok', 'and says all are ok');
  t.equal(await op.locator('#vol-vol2 [data-k="health"]').textContent(), 'ok', 'the last row shows its own health, not the summary\'s');
  await op.screenshot({ path: path.join(ARTIFACTS, 'fleet.png'), fullPage: true });

  // --- the volume page: charts drawn from the stored history, the point timeline with tags.
  await op.goto(`${base}/volume/vol1`);
  await op.waitForSelector('.charts[data-loaded="1"]');
  t.ok(Number(await op.getAttribute('[data-series="rpo"]', 'data-points')) >= 2, 'the RPO chart has samples');
  t.match(await op.textContent('#points'), /app-cycle/, 'the point timeline shows tags');
  await op.screenshot({ path: path.join(ARTIFACTS, 'volume.png'), fullPage: true });

  // --- a test failover from the page: confirmed, listed, its copy is the point; then cleaned up.
  await op.click('[data-action="test-failover-start"]');
  t.match(await op.textContent('#confirm-what'), /test failover.*vol1/s, 'the action asks for confirmation');
  await op.click('#confirm');
  t.equal(await op.getAttribute('#result', 'data-ok'), '1', `test failover started: ${await op.textContent('#detail')}`);
  const rehearsal = JSON.parse((await op.textContent('#detail'))!) as { image: string };
  t.equal(await sha256(rehearsal.image), await sha256(c.source), 'the rehearsal copy is the latest point, equal to the source');
  await op.click('#back');
  t.equal(await op.getAttribute('#test-failovers', 'data-count'), '1', 'the volume page lists the test failover');
  await op.click('[data-action="test-failover-cleanup"]');
  await op.click('#confirm');
  t.equal(await op.getAttribute('#result', 'data-ok'), '1', 'cleaned up');
  await op.click('#back');
  t.equal(await op.getAttribute('#test-failovers', 'data-count'), '0', 'no test failover listed any more');
  t.notOk(await fsp.stat(rehearsal.image).then(() => true, () => false), 'the rehearsal copy is gone');

  // --- a viewer sees but cannot act, even by posting the form by hand with its own CSRF token.
  const viewer = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  await login(viewer, base, 'victor', PASSWORDS.view);
  await viewer.goto(`${base}/volume/vol1`);
  t.equal(await viewer.locator('#actions').count(), 0, 'a viewer is offered no action');
  const csrf = await viewer.getAttribute('input[name=csrf]', 'value');
  const posted = await viewer.evaluate(async (token) => {
    const r = await fetch('/volume/vol1/action/drain', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `csrf=${token}&confirm=drain` });
    return { status: r.status, body: await r.text() };
  }, csrf);
  t.equal(posted.status, 403, 'a viewer\'s drain is refused');
  t.match(posted.body, /TM_ERR_FORBIDDEN.*viewer/, 'because the user is a viewer');

  // --- a page on another site posts a drain form into the operator's browser: refused, nothing drained.
  const evil = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<form id="f" method="post" action="${base}/volume/vol1/action/drain"><input name="confirm" value="drain"><input name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
  t.teardown(() => evil.close());
  const answer = op.waitForResponse((r) => r.url() === `${base}/volume/vol1/action/drain`);
  await op.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
  t.equal((await answer).status(), 403, 'a cross-site form is refused');
  const agent = (await lab.status('agent'))!;
  t.notOk((agent.volumes as Record<string, unknown>[])[0]!.drained, 'the volume was not drained');

  // --- the audit log has every attempt.
  await op.goto(`${base}/audit`);
  const audit = await op.$$eval('tr[data-audit]', (rows) => rows.map((r) => `${(r as HTMLElement).dataset.audit}:${(r as HTMLElement).dataset.result}`));
  for (const want of ['login:refused', 'login:ok', 'test-failover-start:ok', 'test-failover-cleanup:ok', 'drain:refused']) t.ok(audit.includes(want), `audit log: ${want}`);
  t.ok(audit.filter((a) => a === 'drain:refused').length >= 2, 'both refused drains (viewer, cross-site) are in the audit log');

  // --- the two-group recovery plan, run as a test from the page: progress, an approval, the report.
  await op.goto(`${base}/plans`);
  await op.click('[data-plan-test="two-tier"]');
  await op.click('#confirm');
  await op.waitForSelector('#run-state[data-state="waiting-approval"]', { timeout: 30_000 });
  t.same(await op.$$eval('#steps tr[data-step]', (rows) => rows.map((r) => (r as HTMLElement).dataset.state)), ['done', 'done', 'waiting-approval', 'pending', 'pending', 'pending'], 'group db failed over, waiting for the approval; group app not started');
  await op.click('#approve');
  await op.waitForSelector('#run-state[data-state="succeeded"]', { timeout: 30_000 });
  t.same(await op.$$eval('#steps tr[data-step]', (rows) => rows.map((r) => (r as HTMLElement).dataset.state)), Array(6).fill('done'), 'every step done');
  t.equal(await fsp.readFile(marks, 'utf8'), 'two-tier db 1\ntwo-tier app 1\n', 'the pre script of db ran, then the post script of app, each told the plan, group and test');
  const report = (await op.textContent('#report'))!;
  t.match(report, /recovery plan two-tier, run #1 \(test failover\) by olga: SUCCEEDED/, 'the report says who ran what and how it ended');
  const runUrl = op.url();
  const run = (await (await op.request.get(runUrl.replace('/runs/', '/api/runs/'))).json()) as { steps: Array<{ outputs?: Array<{ volume: string; image: string }> }> };
  const images = run.steps.flatMap((st) => st.outputs ?? []);
  t.same(images.map((o) => o.volume), ['vol1', 'vol2'], 'each group\'s volume has its test failover');
  t.equal(await sha256(images[0]!.image), await sha256(c.source), 'vol1\'s test copy is its latest point (the source)');
  t.equal(await sha256(images[1]!.image), await sha256(c.source2), 'vol2\'s test copy is its latest point (the source)');
  await op.screenshot({ path: path.join(ARTIFACTS, 'plan-run.png'), fullPage: true });
  await op.click('#cleanup');
  t.equal(await op.getAttribute('#result', 'data-ok'), '1', 'the test run cleaned up');
  for (const o of images) t.notOk(await fsp.stat(o.image).then(() => true, () => false), `${o.volume}'s test copy removed`);

  // --- the command line: the fleet from the server, a plan run followed to its end, a viewer refused.
  const cli = (args: string[], user: string, password: string): Promise<{ code: number; out: string }> => new Promise((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, ...args, '--server', base, '--user', user, '--ca', path.join(dir, 'pki', 'ca.crt')], { env: { ...process.env, TIDEMARK_PASSWORD: password } }, (e, stdout, stderr) => resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }));
  });
  const st = await cli(['status'], 'victor', PASSWORDS.view);
  t.equal(st.code, 0, 'tidemark status --server');
  t.match(st.out, new RegExp(`vol1\\s+agent-1\\s+.*#${String(mv.appliedSeq)} `), `it shows vol1 applied to #${String(mv.appliedSeq)}: ${st.out}`);
  const viewerRun = await cli(['plan', 'run', 'quick', '--test'], 'victor', PASSWORDS.view);
  t.not(viewerRun.code, 0, 'a viewer cannot run a plan from the command line');
  t.match(viewerRun.out, /TM_ERR_FORBIDDEN.*viewer/);
  const quick = await cli(['plan', 'run', 'quick', '--test'], 'olga', PASSWORDS.op);
  t.equal(quick.code, 0, `tidemark plan run quick --test: ${quick.out}`);
  t.match(quick.out, /recovery plan quick, run #2 \(test failover\) by olga: SUCCEEDED/, 'prints the report');
  const cleaned = await cli(['plan', 'cleanup', '2'], 'olga', PASSWORDS.op);
  t.equal(cleaned.code, 0, `tidemark plan cleanup 2: ${cleaned.out}`);
  t.notOk(await fsp.stat(images[1]!.image).then(() => true, () => false), 'vol2\'s test copy removed again');

  // --- a daemon that stops answering is down, with its cause, within one interval.
  const killedAt = Date.now();
  await lab.kill('ps');
  await op.goto(`${base}/`);
  await op.waitForSelector('#daemon-ps-1 [data-k="state"][data-v="down"]', { timeout: 10_000 });
  const downAfter = Date.now() - killedAt;
  t.ok(downAfter <= INTERVAL_MS + 5000 + 1000, `process server shown down ${downAfter} ms after it died (interval ${INTERVAL_MS} ms, page refresh ≤ 5 s)`);
  const states = (await (await op.request.get(`${base}/api/fleet`)).json()) as { daemons: Array<{ name: string; up: boolean; cause: string; sinceMs: number }> };
  const ps = states.daemons.find((d) => d.name === 'ps-1')!;
  t.ok(ps.sinceMs - killedAt <= INTERVAL_MS + 500, `the collector marked it down ${ps.sinceMs - killedAt} ms after the kill (one interval: ${INTERVAL_MS} ms)`);
  t.match(ps.cause, /not running|connection refused/, `with its cause: ${ps.cause}`);
  t.match(await cell(op, 'vol-vol1', 'health'), /process-server ps-1 DOWN/, 'the volume\'s health names the daemon down');
  await op.screenshot({ path: path.join(ARTIFACTS, 'fleet-ps-down.png'), fullPage: true });
  lab.start('ps');

  // --- SIGKILL the configuration server: history and audit log are intact after a restart.
  const before = (await (await op.request.get(`${base}/api/volume/vol1/history?range=hour`)).json()) as { samples: unknown[] };
  await c.killCs();
  await c.startCs();
  const base2 = c.url();
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  await login(page, base2, 'olga', PASSWORDS.op);
  const after = (await (await page.request.get(`${base2}/api/volume/vol1/history?range=hour`)).json()) as { samples: unknown[] };
  t.ok(after.samples.length >= before.samples.length, `history kept across SIGKILL (${before.samples.length} samples before, ${after.samples.length} after)`);
  await page.goto(`${base2}/audit`);
  const audit2 = await page.$$eval('tr[data-audit]', (rows) => rows.map((r) => `${(r as HTMLElement).dataset.audit}:${(r as HTMLElement).dataset.result}`));
  for (const want of ['test-failover-start:ok', 'test-failover-cleanup:ok', 'drain:refused', 'plan run --test:started', 'plan approve:ok', 'plan cleanup:ok']) t.ok(audit2.includes(want), `audit log after SIGKILL: ${want}`);
});
