// Starting and stopping the installed agent on the protected machine: a systemd unit where systemd is
// PID 1, otherwise (containers, minimal systems) the agent started directly in a session of its own with
// a pid file under the prefix. Each function returns a shell script run as root over SSH.
import { systemdUnit } from '../service-units.js';
import type { InstallRecord, Layout } from './layout.js';
import { UNIT_NAME } from './layout.js';
import { q } from './ssh.js';

/** The agent's unit: the shared hardened renderer, pointed at this install's package, node and config. */
export function agentUnit(L: Layout, rec: Pick<InstallRecord, 'node'>, config: unknown): string {
  return systemdUnit({ role: 'agent', configPath: L.config, config, installDir: L.app, nodePath: rec.node });
}

/** `alive PID`: true when PID is this prefix's agent (its command line names our entry point), not a reused pid. */
function aliveFn(L: Layout): string {
  return `APP=${q(L.entry)}\nalive() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\\000' '\\n' < "/proc/$1/cmdline" | grep -qxF "$APP"; }`;
}

/** Prints `started=<pid>` (or `running=<pid>` when it already ran). */
export function startScript(L: Layout, rec: InstallRecord, config: unknown): string {
  if (rec.mode === 'systemd') {
    return [
      'set -eu',
      `cat > ${q(L.unitPath)} <<'TIDEMARK_UNIT_EOF'\n${agentUnit(L, rec, config)}TIDEMARK_UNIT_EOF`,
      'systemctl daemon-reload',
      `systemctl enable --now ${UNIT_NAME} >/dev/null 2>&1 || { systemctl status --no-pager ${UNIT_NAME} >&2; exit 1; }`,
      `echo "started=$(systemctl show -p MainPID --value ${UNIT_NAME})"`,
    ].join('\n');
  }
  return [
    'set -eu',
    aliveFn(L),
    `PIDF=${q(L.pidFile)}`,
    'if [ -f "$PIDF" ] && alive "$(cat "$PIDF")"; then echo "running=$(cat "$PIDF")"; exit 0; fi',
    // The log may hold volume paths, peers and errors: root's alone, even if an older install made it 0644.
    `rm -f "$PIDF"; (umask 077; mkdir -p ${q(L.logDir)} ${q(L.run)}; touch ${q(L.log)}); chmod 700 ${q(L.logDir)}; chmod 600 ${q(L.log)}; cd ${q(L.prefix)}`,
    // setsid: a session of its own, so the agent outlives this SSH session; the inner sh records its own
    // pid and then becomes the agent (exec), so the pid file names the agent itself.
    `setsid sh -c 'echo $$ > "$0"; exec "$@"' "$PIDF" ${q(rec.node)} "$APP" agent --config ${q(L.config)} >> ${q(L.log)} 2>&1 < /dev/null &`,
    'i=0; while [ ! -s "$PIDF" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
    'echo "started=$(cat "$PIDF" 2>/dev/null)"',
  ].join('\n');
}

/**
 * Stop the agent and wait until it is gone (SIGTERM, then SIGKILL after 15 s). Works from the unit and
 * the pid file whatever the record says, so a half-finished install can be stopped too. `disable`
 * also removes the unit (`removed=<path>`). Prints `stopped=<pid>` or `killed=<pid>`; neither when it was not running.
 */
export function stopScript(L: Layout, disable: boolean): string {
  return [
    aliveFn(L),
    `PIDF=${q(L.pidFile)}; UNIT=${UNIT_NAME}`,
    `if [ -f ${q(L.unitPath)} ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then`,
    `  PID=$(systemctl show -p MainPID --value "$UNIT" 2>/dev/null || true)`,
    `  ${disable ? 'systemctl disable --now "$UNIT" >/dev/null 2>&1 || true' : 'systemctl stop "$UNIT" || true'}`,
    '  if [ -n "$PID" ] && [ "$PID" != 0 ]; then echo "stopped=$PID"; fi',
    'fi',
    ...(disable ? [`if [ -f ${q(L.unitPath)} ]; then rm -f ${q(L.unitPath)}; echo "removed=${L.unitPath}"; systemctl daemon-reload >/dev/null 2>&1 || true; fi`] : []),
    'PID=$(cat "$PIDF" 2>/dev/null || true)',
    'if alive "$PID"; then',
    '  kill -TERM "$PID"; i=0',
    '  while alive "$PID" && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done',
    '  if alive "$PID"; then kill -KILL "$PID"; sleep 0.2; echo "killed=$PID"; else echo "stopped=$PID"; fi',
    'fi',
    'rm -f "$PIDF"',
    'echo done=1',
  ].join('\n');
}

/** Prints `pid=<pid>` and `alive=yes|no`, then `status=<the agent's /status JSON>` or `statusError=...`. */
export function agentStateScript(L: Layout, rec: InstallRecord): string {
  const fetch = `fetch("http://127.0.0.1:"+require("fs").readFileSync(process.argv[1],"utf8").trim()+"/status").then(r=>r.text()).then(t=>console.log("status="+t.replace(/\\n/g," ")),e=>console.log("statusError="+e.message))`;
  return [
    aliveFn(L),
    rec.mode === 'systemd' ? `PID=$(systemctl show -p MainPID --value ${UNIT_NAME} 2>/dev/null || true)` : `PID=$(cat ${q(L.pidFile)} 2>/dev/null || true)`,
    'echo "pid=$PID"',
    'if alive "$PID"; then echo alive=yes; else echo alive=no; fi',
    `SP=${q(`${L.state}/status-port`)}`,
    `if [ -f "$SP" ]; then ${q(rec.node)} -e ${q(fetch)} "$SP" 2>&1 | head -c 200000; else echo "statusError=no status-port file yet"; fi`,
  ].join('\n');
}

export function logTailScript(L: Layout, rec: Pick<InstallRecord, 'mode'>, lines = 40): string {
  return rec.mode === 'systemd'
    ? `journalctl -u ${UNIT_NAME} -n ${lines} --no-pager -o cat 2>&1 || true`
    : `tail -n ${lines} ${q(L.log)} 2>&1 || true`;
}
