// The embedded store: one SQLite file (better-sqlite3) in WAL mode with synchronous=FULL, so whatever a
// call returned from is on disk and a SIGKILL loses none of it. The schema's version is PRAGMA
// user_version: an older file is migrated, a newer one refused (docs/FORMAT.md, "Configuration server store").
import Database from 'better-sqlite3';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { tmError, wrap } from '../common/errors.js';
import { TIERS, type AuditEntry, type GuidedRecord, type DaemonState, type PlanRunRecord, type PointSeen, type Session, type Store, type Tier, type VolumeSample } from './store.js';

export const STORE_FILE = 'store.sqlite';
export const STORE_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS samples (volume TEXT NOT NULL, tier INTEGER NOT NULL, t INTEGER NOT NULL,
  rpo INTEGER, agent INTEGER, ps INTEGER, mt INTEGER, applied INTEGER, seq INTEGER, mode TEXT NOT NULL,
  PRIMARY KEY (volume, tier, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points (volume TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
  consistency TEXT NOT NULL, tags TEXT NOT NULL, PRIMARY KEY (volume, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daemons (name TEXT PRIMARY KEY, up INTEGER NOT NULL, cause TEXT, since INTEGER NOT NULL,
  last_ok INTEGER, snapshot TEXT);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, user TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, params TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL,
  csrf TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS plan_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, plan TEXT NOT NULL, test INTEGER NOT NULL,
  user TEXT NOT NULL, started INTEGER NOT NULL, finished INTEGER, state TEXT NOT NULL, steps TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guided (id INTEGER PRIMARY KEY AUTOINCREMENT, volume TEXT NOT NULL, state TEXT NOT NULL,
  body TEXT NOT NULL);
`;

/** Max of two figures where either may be missing (SQLite's max() is NULL if any argument is). */
const MAX = (c: string): string => `${c} = max(coalesce(${c}, excluded.${c}), coalesce(excluded.${c}, ${c}))`;

type Row = Record<string, unknown>;

export class SqliteStore implements Store {
  private constructor(private readonly db: Database.Database) {}

  static async open(stateDir: string): Promise<SqliteStore> {
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
    const file = path.join(stateDir, STORE_FILE);
    let db: Database.Database;
    try {
      db = new Database(file);
    } catch (e) {
      throw wrap(e, `open the configuration server's store ${file}`, { path: file });
    }
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > STORE_VERSION) {
      db.close();
      throw tmError('TM_ERR_STORE_VERSION', `${file} is store version ${version}; this tidemark reads up to ${STORE_VERSION}: run the newer tidemark, or move the file away to start a new history`, { path: file });
    }
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.exec(SCHEMA);
    if (version < STORE_VERSION) db.pragma(`user_version = ${STORE_VERSION}`);
    await fsp.chmod(file, 0o600);
    return new SqliteStore(db);
  }

  private readonly insRaw = (): Database.Statement => this.stmt('insRaw', 'INSERT OR REPLACE INTO samples (volume, tier, t, rpo, agent, ps, mt, applied, seq, mode) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?)');
  private readonly upRoll = (): Database.Statement => this.stmt('upRoll', `INSERT INTO samples (volume, tier, t, rpo, agent, ps, mt, applied, seq, mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (volume, tier, t) DO UPDATE SET ${MAX('rpo')}, ${MAX('agent')}, ${MAX('ps')}, ${MAX('mt')},
    applied = coalesce(excluded.applied, applied), seq = coalesce(excluded.seq, seq), mode = excluded.mode`);

  private readonly cache = new Map<string, Database.Statement>();
  private stmt(key: string, sql: string): Database.Statement {
    let s = this.cache.get(key);
    if (!s) this.cache.set(key, (s = this.db.prepare(sql)));
    return s;
  }

  record(samples: readonly VolumeSample[], points: readonly PointSeen[], daemons: readonly DaemonState[]): void {
    const raw = this.insRaw();
    const roll = this.upRoll();
    const pt = this.stmt('insPoint', 'INSERT OR IGNORE INTO points (volume, seq, at, consistency, tags) VALUES (?, ?, ?, ?, ?)');
    const dm = this.stmt('putDaemon', 'INSERT OR REPLACE INTO daemons (name, up, cause, since, last_ok, snapshot) VALUES (?, ?, ?, ?, ?, ?)');
    this.db.transaction(() => {
      for (const s of samples) {
        const figures = [s.rpoMs, s.agentBacklog, s.psBacklog, s.mtBacklog, s.appliedBytes, s.appliedSeq, s.mode] as const;
        raw.run(s.volume, s.atMs, ...figures);
        for (const tier of TIERS) if (tier.bucketMs > 0) roll.run(s.volume, tier.id, Math.floor(s.atMs / tier.bucketMs) * tier.bucketMs, ...figures);
      }
      for (const p of points) pt.run(p.volume, p.seq, p.atMs, p.consistency, JSON.stringify(p.tags));
      for (const d of daemons) dm.run(d.name, d.up ? 1 : 0, d.cause, d.sinceMs, d.lastOkMs, d.snapshot === null ? null : JSON.stringify(d.snapshot));
    })();
  }

  history(volume: string, tier: Tier, fromMs: number): VolumeSample[] {
    const rows = this.stmt('hist', 'SELECT * FROM samples WHERE volume = ? AND tier = ? AND t >= ? ORDER BY t').all(volume, tier.id, fromMs) as Row[];
    return rows.map((r) => ({ volume, atMs: r.t as number, rpoMs: r.rpo as number | null, agentBacklog: r.agent as number | null, psBacklog: r.ps as number | null, mtBacklog: r.mt as number | null, appliedBytes: r.applied as number | null, appliedSeq: r.seq as number | null, mode: r.mode as string }));
  }

  points(volume: string, limit: number): PointSeen[] {
    const rows = this.stmt('points', 'SELECT * FROM points WHERE volume = ? ORDER BY seq DESC LIMIT ?').all(volume, limit) as Row[];
    return rows.map((r) => ({ volume, seq: r.seq as number, atMs: r.at as number, consistency: r.consistency as string, tags: JSON.parse(r.tags as string) as string[] }));
  }

  daemonStates(): DaemonState[] {
    const rows = this.stmt('daemons', 'SELECT * FROM daemons ORDER BY name').all() as Row[];
    return rows.map((r) => ({ name: r.name as string, up: r.up === 1, cause: r.cause as string | null, sinceMs: r.since as number, lastOkMs: r.last_ok as number | null, snapshot: r.snapshot === null ? null : (JSON.parse(r.snapshot as string) as Record<string, unknown>) }));
  }

  prune(nowMs: number): void {
    const del = this.stmt('prune', 'DELETE FROM samples WHERE tier = ? AND t < ?');
    this.db.transaction(() => {
      for (const t of TIERS) del.run(t.id, nowMs - t.keepMs);
      this.stmt('prunePoints', 'DELETE FROM points WHERE at < ?').run(nowMs - TIERS[TIERS.length - 1]!.keepMs);
      this.stmt('pruneSessions', 'DELETE FROM sessions WHERE expires < ?').run(nowMs);
    })();
  }

  audit(e: AuditEntry): number {
    const r = this.stmt('audit', 'INSERT INTO audit (at, user, action, target, params, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?)').run(e.atMs, e.user, e.action, e.target, JSON.stringify(e.params), e.result, e.detail);
    return Number(r.lastInsertRowid);
  }

  auditList(limit: number, target?: string): AuditEntry[] {
    const rows = (target === undefined
      ? this.stmt('auditAll', 'SELECT * FROM audit ORDER BY id DESC LIMIT ?').all(limit)
      : this.stmt('auditTarget', 'SELECT * FROM audit WHERE target = ? ORDER BY id DESC LIMIT ?').all(target, limit)) as Row[];
    return rows.map((r) => ({ id: r.id as number, atMs: r.at as number, user: r.user as string, action: r.action as string, target: r.target as string, params: JSON.parse(r.params as string) as Record<string, unknown>, result: r.result as AuditEntry['result'], detail: r.detail as string }));
  }

  putSession(s: Session): void {
    this.stmt('putSession', 'INSERT OR REPLACE INTO sessions (id_hash, user, role, csrf, expires) VALUES (?, ?, ?, ?, ?)').run(s.idHash, s.user, s.role, s.csrf, s.expiresMs);
  }

  getSession(idHash: string): Session | null {
    const r = this.stmt('getSession', 'SELECT * FROM sessions WHERE id_hash = ?').get(idHash) as Row | undefined;
    return r ? { idHash, user: r.user as string, role: r.role as Session['role'], csrf: r.csrf as string, expiresMs: r.expires as number } : null;
  }

  deleteSession(idHash: string): void {
    this.stmt('delSession', 'DELETE FROM sessions WHERE id_hash = ?').run(idHash);
  }

  putPlanRun(r: Omit<PlanRunRecord, 'id'> & { id?: number }): number {
    if (r.id === undefined) {
      const x = this.stmt('insRun', 'INSERT INTO plan_runs (plan, test, user, started, finished, state, steps) VALUES (?, ?, ?, ?, ?, ?, ?)').run(r.plan, r.test ? 1 : 0, r.user, r.startedMs, r.finishedMs, r.state, JSON.stringify(r.steps));
      return Number(x.lastInsertRowid);
    }
    this.stmt('upRun', 'UPDATE plan_runs SET finished = ?, state = ?, steps = ? WHERE id = ?').run(r.finishedMs, r.state, JSON.stringify(r.steps), r.id);
    return r.id;
  }

  planRuns(limit: number): PlanRunRecord[] {
    return (this.stmt('runs', 'SELECT * FROM plan_runs ORDER BY id DESC LIMIT ?').all(limit) as Row[]).map(runOf);
  }

  planRun(id: number): PlanRunRecord | null {
    const r = this.stmt('run', 'SELECT * FROM plan_runs WHERE id = ?').get(id) as Row | undefined;
    return r ? runOf(r) : null;
  }

  putGuided(r: Omit<GuidedRecord, 'id'> & { id?: number }): number {
    if (r.id === undefined) return Number(this.stmt('insGuided', 'INSERT INTO guided (volume, state, body) VALUES (?, ?, ?)').run(r.volume, r.state, JSON.stringify(r.body)).lastInsertRowid);
    this.stmt('upGuided', 'UPDATE guided SET state = ?, body = ? WHERE id = ?').run(r.state, JSON.stringify(r.body), r.id);
    return r.id;
  }

  guided(id: number): GuidedRecord | null {
    const r = this.stmt('guided', 'SELECT * FROM guided WHERE id = ?').get(id) as Row | undefined;
    return r ? guidedOf(r) : null;
  }

  guidedList(limit: number): GuidedRecord[] {
    return (this.stmt('guidedList', 'SELECT * FROM guided ORDER BY id DESC LIMIT ?').all(limit) as Row[]).map(guidedOf);
  }

  historyBytes(): number {
    const pages = this.db.pragma('page_count', { simple: true }) as number;
    const free = this.db.pragma('freelist_count', { simple: true }) as number;
    return (pages - free) * (this.db.pragma('page_size', { simple: true }) as number);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function runOf(r: Row): PlanRunRecord {
  return { id: r.id as number, plan: r.plan as string, test: r.test === 1, user: r.user as string, startedMs: r.started as number, finishedMs: r.finished as number | null, state: r.state as PlanRunRecord['state'], steps: JSON.parse(r.steps as string) as unknown[] };
}

function guidedOf(r: Row): GuidedRecord {
  return { id: Number(r.id), volume: String(r.volume), state: String(r.state) as GuidedRecord['state'], body: JSON.parse(String(r.body)) as Record<string, unknown> };
}
