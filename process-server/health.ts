// The process server's cache watch: how full the cache is against its quota (bytes, % of its filesystem,
// and what the filesystem can still hold), how old the oldest differential waiting to be forwarded is,
// and from those the health (ok / warning / critical, after InMage's process-server alerts) and the flow
// control the receiver applies to agents (slow down, then stop, with hysteresis). Transitions are logged
// once; the status snapshot reads the last evaluation.
import { promises as fsp } from 'node:fs';
import { DEFAULTS } from '../common/defaults.js';
import { mib } from '../common/units.js';
import type { Logger } from '../common/log.js';
import type { FlowState } from '../proto/receiver.js';
import type { PsConfig } from './config.js';

export type CacheConfig = PsConfig['cache'];
export type HealthLevel = 'ok' | 'warning' | 'critical';

/** The top-level `cache` of the process server's status snapshot (and its /metrics). */
export interface CacheStatus {
  quotaBytes: number;
  usedBytes: number;
  freePercent: number;
  health: HealthLevel;
  reasons: string[];
  backpressure: boolean;
  /** The volumes agents are told to hold back (those filling the cache). */
  pausedVolumes: string[];
  /** Wait before each new differential from an agent while the cache fills (0: none). */
  acceptDelayMs: number;
  /** The filesystem's space available to us at the last check (statfs). */
  filesystemAvailBytes: number;
}

/** What the monitor reads from the cache. */
export interface CacheUsage {
  /** Bytes of cached differentials (committed .hrl files). */
  usedBytes(): number;
  /** Per volume: ms since the oldest differential not yet acknowledged by its master target arrived (0: none). */
  backlogAges(): Map<string, number>;
  /** Per volume: bytes cached, and whether its master target is taking them (connected and acknowledging). */
  volumes(): Array<{ id: string; bytes: number; draining: boolean }>;
}

interface Filesystem {
  sizeBytes: number;
  availBytes: number;
  /** usedBytes() when it was measured: our own growth since comes out of availBytes. */
  usedAtCheck: number;
}

interface Finding {
  /** Stable across ticks (the numbers in `text` are not): what transitions are logged on. */
  key: string;
  level: Exclude<HealthLevel, 'ok'>;
  text: string;
}

const RANK: Record<HealthLevel, number> = { ok: 0, warning: 1, critical: 2 };

export function duration(ms: number): string {
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/**
 * The effective quota: the configured bytes, the configured % of the filesystem, and never more than
 * the filesystem can hold (what we use plus what is still available), so a disk filled by something
 * else brings backpressure before ENOSPC.
 */
export function effectiveQuota(cfg: Pick<CacheConfig, 'quotaBytes' | 'quotaPercent'>, fs: Filesystem, used: number): { quota: number; avail: number } {
  const avail = Math.max(0, fs.availBytes - Math.max(0, used - fs.usedAtCheck));
  const quota = Math.max(1, Math.floor(Math.min(cfg.quotaBytes ?? Infinity, (cfg.quotaPercent / 100) * fs.sizeBytes, used + avail)));
  return { quota, avail };
}

/** Findings and the health level for a cache state; pure, so it is tested and documented in one place. */
export function evaluateHealth(cfg: CacheConfig, quota: number, used: number, backlogAges: Map<string, number>): { health: HealthLevel; findings: Finding[] } {
  const findings: Finding[] = [];
  const freePercent = (100 * Math.max(0, quota - used)) / quota;
  const space = freePercent < cfg.criticalFreePercent ? 'critical' : freePercent < cfg.warningFreePercent ? 'warning' : null;
  if (space) {
    findings.push({ key: 'space', level: space, text: `cache ${freePercent.toFixed(1)}% free (${mib(Math.max(0, quota - used))} of its ${mib(quota)} quota; warning below ${cfg.warningFreePercent}%, critical below ${cfg.criticalFreePercent}%)` });
  }
  for (const [volume, age] of backlogAges) {
    const level = age >= cfg.backlogCriticalMs ? 'critical' : age >= cfg.backlogWarningMs ? 'warning' : null;
    if (level) {
      findings.push({ key: `backlog:${volume}`, level, text: `volume ${volume}: oldest differential not yet forwarded is ${duration(age)} old (warning from ${duration(cfg.backlogWarningMs)}, critical from ${duration(cfg.backlogCriticalMs)})` });
    }
  }
  const health = findings.reduce<HealthLevel>((h, f) => (RANK[f.level] > RANK[h] ? f.level : h), 'ok');
  return { health, findings };
}

/**
 * Flow control from free space: from `slowBelowFreePercent` each new differential waits, longer as the
 * cache fills (up to `maxAcceptDelayMs` at `stopBelowFreePercent`); below that, agents are told to stop
 * until free space is back to `resumeAboveFreePercent`; at the quota nothing more is taken at all.
 */
/** Below this share of its filesystem free, the cache takes nothing from anyone (the quota may be above it). */
export const EXHAUSTED_FREE_FRACTION = 0.02;

export function nextFlow(cfg: CacheConfig, prev: FlowState, quota: number, used: number, vols: ReadonlyArray<{ id: string; bytes: number; draining: boolean }> = [], exhausted = false): FlowState {
  const freePercent = (100 * Math.max(0, quota - used)) / quota;
  const paused = prev.paused ? freePercent < cfg.resumeAboveFreePercent : freePercent < cfg.stopBelowFreePercent;
  // Who is stopped: the volumes whose master target is not taking them (one dead master target must not
  // stop the volumes of the others); if every one is draining, those holding at least a fair share.
  const holding = vols.filter((v) => v.bytes > 0);
  const stuck = holding.filter((v) => !v.draining);
  const fair = used / Math.max(1, holding.length);
  const volumes = !paused ? [] : (stuck.length > 0 ? stuck : holding.filter((v) => v.bytes >= fair)).map((v) => v.id).sort();
  let delayMs = 0;
  if (freePercent < cfg.slowBelowFreePercent) {
    const span = cfg.slowBelowFreePercent - cfg.stopBelowFreePercent;
    const depth = span > 0 ? Math.min(1, (cfg.slowBelowFreePercent - freePercent) / span) : 1;
    delayMs = Math.round((cfg.maxAcceptDelayMs * depth) / 10) * 10; // coarse steps: fewer updates, same effect
  }
  const reason = paused ? `cache ${freePercent.toFixed(1)}% free of its ${mib(quota)} quota (resumes at ${cfg.resumeAboveFreePercent}%)` : '';
  return { paused, volumes, reason, delayMs, full: used >= quota, exhausted };
}

export class CacheMonitor {
  private fs: Filesystem = { sizeBytes: 0, availBytes: 0, usedAtCheck: 0 };
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  private lastKey = 'ok';
  private current: CacheStatus = { quotaBytes: 0, usedBytes: 0, freePercent: 100, health: 'ok', reasons: [], backpressure: false, pausedVolumes: [], acceptDelayMs: 0, filesystemAvailBytes: 0 };
  flow: FlowState = { paused: false, volumes: [], reason: '', delayMs: 0, full: false };

  constructor(
    private readonly cfg: CacheConfig,
    private readonly dir: string,
    private readonly usage: CacheUsage,
    private readonly log: Logger,
    /** Called when the flow state changes (wired to the receiver). */
    private readonly onFlow: (f: FlowState) => void,
    private readonly intervalMs: number = DEFAULTS.processServer.cacheCheckIntervalMs,
  ) {}

  async open(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => { this.checking ??= this.check().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'cache space check failed')).finally(() => { this.checking = null; }); }, this.intervalMs);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.checking;
  }

  status(): CacheStatus {
    return this.current;
  }

  /** Measure the filesystem, then evaluate. */
  private async check(): Promise<void> {
    const used = this.usage.usedBytes();
    const s = await fsp.statfs(this.dir);
    this.fs = { sizeBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize, usedAtCheck: used };
    this.update();
  }

  /** Evaluate with the last filesystem figures (called on every change of the cache's contents). */
  update(): void {
    const used = this.usage.usedBytes();
    const { quota, avail } = effectiveQuota(this.cfg, this.fs, used);
    const ages = this.usage.backlogAges();
    const { health, findings } = evaluateHealth(this.cfg, quota, used, ages);
    const flow = nextFlow(this.cfg, this.flow, quota, used, this.usage.volumes(), this.fs.sizeBytes > 0 && avail < EXHAUSTED_FREE_FRACTION * this.fs.sizeBytes);
    this.current = {
      quotaBytes: quota,
      usedBytes: used,
      freePercent: Math.round((1000 * Math.max(0, quota - used)) / quota) / 10,
      health,
      reasons: findings.map((f) => f.text),
      backpressure: flow.paused,
      pausedVolumes: flow.paused ? flow.volumes : [],
      acceptDelayMs: flow.delayMs,
      filesystemAvailBytes: avail,
    };
    this.logHealth(health, findings);
    this.setFlow(flow);
  }

  private logHealth(health: HealthLevel, findings: Finding[]): void {
    const key = [health, ...findings.map((f) => `${f.key}=${f.level}`).sort()].join(' ');
    if (key === this.lastKey) return;
    this.lastKey = key;
    const fields = { health, reasons: findings.map((f) => f.text), usedBytes: this.current.usedBytes, quotaBytes: this.current.quotaBytes };
    if (health === 'critical') this.log.error(fields, 'cache health critical');
    else if (health === 'warning') this.log.warn(fields, 'cache health warning');
    else this.log.info(fields, 'cache health ok');
  }

  private setFlow(next: FlowState): void {
    const prev = this.flow;
    if (next.paused === prev.paused && next.delayMs === prev.delayMs && next.full === prev.full && next.exhausted === prev.exhausted && next.volumes.join() === prev.volumes.join()) return;
    this.flow = next;
    const fields = { usedBytes: this.current.usedBytes, quotaBytes: this.current.quotaBytes, freePercent: this.current.freePercent };
    if (next.paused !== prev.paused) {
      if (next.paused) this.log.warn({ ...fields, reason: next.reason, volumes: next.volumes }, 'cache nearly full: agents told to stop sending these volumes');
      else this.log.info(fields, 'cache has room again: agents told to resume');
    }
    if ((next.delayMs > 0) !== (prev.delayMs > 0)) {
      if (next.delayMs > 0) this.log.warn(fields, 'cache filling: new differentials from agents are delayed');
      else this.log.info(fields, 'cache no longer filling: differentials accepted without delay');
    }
    if (next.full !== prev.full) {
      if (next.full) this.log.error({ ...fields, volumes: next.volumes }, 'cache at its quota: no differential of these volumes is accepted until their master target takes some');
      else this.log.info(fields, 'cache below its quota again');
    }
    if (next.exhausted !== prev.exhausted) {
      if (next.exhausted) this.log.error(fields, 'cache filesystem nearly out of space: no differential is accepted from anyone');
      else this.log.info(fields, 'cache filesystem has space again');
    }
    this.onFlow(next);
  }
}
