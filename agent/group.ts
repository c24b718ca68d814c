// A consistency group: volumes of this agent (say a database's data and log disks) whose points are cut at
// one instant, so the whole group recovers to one point. Each cycle of the group:
//   1. every member does what needs no new view (bitmap mode, a resync step, the rest of a point read from
//      a held snapshot); while any member is still reading a point, no new cut is taken;
//   2. the others drain their trackers (tracker.beforeCapture), then all their filesystems are frozen in
//      config order, bounded by the smallest freeze.timeoutMs (capture/group-freeze.ts):
//      - reflink: each member's image is cloned (it lives on another, unfrozen filesystem), then all are
//        thawed: a crash-consistent cut with a short freeze;
//      - freeze: pre scripts first (all of them, before any freeze: a checkpoint may write to every
//        member), each member is read live while frozen and thawed once read, post scripts at the end:
//        an app-consistent cut;
//      - freeze in data mode (every member tracker "data"): pre scripts, all frozen, a marker put in each
//        member's write stream, all thawed at once, post scripts. Nothing is read while frozen: each
//        member's part of the cut is its stream up to its marker, journaled as it arrives (the replicator
//        holds the view until then). Between cuts (at most one per second, none while nothing was written
//        since the last thaw, or while a member's stream has a gap) members journal plain CRASH slices;
//   3. each member journals its part as any volume does (VolumeReplicator.captureCut); the differential
//      that completes its point carries the tag `cg:<group>:<instant ms>:<members>` (proto/group-tag.ts).
// A member whose point is not whole (fuzzy, resyncing, in bitmap mode, a freeze past its bound) leaves the
// cut incomplete: the members still journal as usual, and the master target lists a group point only where
// the tag reached as many volumes as it names. A failed freeze or script makes the cycle fuzzy for all.
import { promises as fsp } from 'node:fs';
import { MinGap } from './cadence.js';
import path from 'node:path';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { thaw } from '../native/index.js';
import { formatGroupTag } from '../proto/group-tag.js';
import type { CapturedView } from './capture/capture.js';
import type { DataFreezeCapture, StreamMarker } from './capture/data-freeze.js';
import type { FreezeCapture } from './capture/freeze.js';
import { GroupFreeze } from './capture/group-freeze.js';
import type { ReflinkCapture } from './capture/reflink.js';
import type { AgentGroupConfig, AgentVolumeConfig } from './config.js';
import type { CycleResult, VolumeReplicator } from './replicator.js';

export interface GroupMember {
  replicator: VolumeReplicator;
  config: AgentVolumeConfig;
}

export interface GroupOptions {
  stateDir: string;
  log: Logger;
  /** A member's cycle failed: reported as any volume's failed cycle is. */
  onError(volumeId: string, err: unknown): void;
}

/** A cut all members journaled as a point: the sequence number of each member's differential. */
export interface GroupPoint {
  tag: string;
  atMs: number;
  seqs: Record<string, number>;
}

interface Cut {
  atMs: number;
  views: Map<GroupMember, CapturedView>;
  /** After every member journaled its part: thaw what is still frozen, run post scripts. */
  finish(): Promise<void>;
}

const FAILED = Symbol('failed');
/** Data mode: how long a full ring is retried while frozen, and cuts at most this often. */
const MARK_RETRY_MS = 20;
const STREAM_MIN_GAP_MS = 1000;

export class ConsistencyGroup {
  readonly name: string;
  readonly capture: 'freeze' | 'reflink';
  /** Every member is in data mode: the cut is a marker in each write stream (cutStream). */
  readonly streams: boolean;
  readonly stats = { cuts: 0, points: 0, incomplete: 0, failures: 0, lastError: null as string | null, lastFrozenMs: 0, maxFrozenMs: 0 };
  lastPoint: GroupPoint | null = null;
  /** The last cut until each member has journaled its part of it or cannot any more. */
  private pending: { tag: string; atMs: number; seqs: Record<string, number> } | null = null;
  private lastAtMs = 0;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(config: AgentGroupConfig, readonly members: GroupMember[], private readonly opts: GroupOptions) {
    this.name = config.name;
    // The config schema (agent/config.ts) has made sure every member has a freeze section and one capture.
    this.capture = members[0]!.config.capture === 'freeze' ? 'freeze' : 'reflink';
    this.streams = this.capture === 'freeze' && members.every((m) => m.config.tracker === 'data');
    this.timeoutMs = Math.min(...members.map((m) => m.config.freeze!.timeoutMs));
    this.log = opts.log.child({ group: this.name });
  }

  private mountpoint(m: GroupMember): string {
    return m.config.freeze!.mountpoint;
  }

  /** Check at start that a cut can work here; thaw what an agent killed during a cut left frozen. */
  async open(): Promise<void> {
    const frozen = new Map<number, string>();
    for (const m of this.members) {
      const id = m.replicator.volumeId;
      const mp = this.mountpoint(m);
      const st = await fsp.stat(mp).catch((e) => { throw wrap(e, `freeze.mountpoint of ${id} (group "${this.name}")`, { volume: id, path: mp }); });
      const dev = await fsp.stat(m.replicator.volume.path);
      if (dev.isBlockDevice() && st.dev !== dev.rdev) {
        throw tmError('TM_ERR_CONFIG_INVALID', `freeze.mountpoint ${mp} of ${id} is not a filesystem on ${m.replicator.volume.path}; name where this volume is mounted`, { volume: id, path: mp });
      }
      frozen.set(st.dev, mp);
      await thaw(mp).then(() => this.log.warn({ mountpoint: mp }, 'thawed a filesystem left frozen (by an agent that was killed?)'), () => {});
    }
    // Anything written during the cut must be on a filesystem it does not freeze, or the write would wait
    // for the thaw that waits for the write.
    const writes: Array<[string, string]> = [["the agent's stateDir", this.opts.stateDir]];
    for (const m of this.members) {
      if (this.capture === 'reflink') writes.push([`the image and clones of ${m.replicator.volumeId}`, path.dirname((m.replicator.capture as ReflinkCapture).keptPath(0))]);
    }
    for (const [what, p] of writes) {
      const on = frozen.get((await fsp.stat(p)).dev);
      if (on !== undefined) throw tmError('TM_ERR_CONFIG_INVALID', `${what} (${p}) is on ${on}, which group "${this.name}" freezes; put it on another filesystem`, { path: p });
    }
    this.log.info({ volumes: this.members.map((m) => m.replicator.volumeId), capture: this.capture, timeoutMs: this.timeoutMs }, 'consistency group ready');
  }

  /** One cycle of every member; never throws (a member's failure is reported through onError). */
  async cycle(): Promise<CycleResult[]> {
    const out: CycleResult[] = [];
    // A member still reading its part of the last cut from a held snapshot could not join a new one.
    const busy = this.members.some((m) => m.replicator.holding);
    let joining: GroupMember[] = [];
    for (const m of this.members) {
      const r = await this.attempt(m, () => m.replicator.solo());
      if (r === FAILED) continue;
      if (r) out.push(r);
      else if (!busy) joining.push(m);
    }
    this.settle();
    const ready: GroupMember[] = [];
    for (const m of joining) if ((await this.attempt(m, async () => m.replicator.tracker.beforeCapture?.())) !== FAILED) ready.push(m);
    joining = ready;
    if (joining.length === 0) return out;
    // Nothing dirty anywhere: no cut (it would freeze the applications for nothing).
    if (!joining.some((m) => m.replicator.owesCapture())) return [...out, ...joining.map((m) => m.replicator.idle())];

    const cut = this.capture === 'reflink' ? await this.cutReflink(joining) : this.streams ? await this.cutStream(joining) : await this.cutFreeze(joining);
    const tag = formatGroupTag({ group: this.name, atMs: cut?.atMs ?? 0, members: this.members.length });
    if (cut) {
      this.stats.cuts++;
      this.pending = { tag, atMs: cut.atMs, seqs: {} };
    }
    try {
      for (const m of joining) {
        const captured = cut?.views.get(m) ?? { view: m.replicator.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: async () => {} };
        const r = await this.attempt(m, () => m.replicator.captureCut({ captured, tag }));
        if (r !== FAILED) out.push(r);
      }
    } finally {
      await cut?.finish();
    }
    this.settle();
    return out;
  }

  /** The cut's instant: after every member is frozen. Strictly increasing, as it names the cut. */
  private instant(): number {
    this.lastAtMs = Math.max(Date.now(), this.lastAtMs + 1);
    return this.lastAtMs;
  }

  private freezer(joining: GroupMember[]): GroupFreeze {
    return new GroupFreeze(joining.map((m) => this.mountpoint(m)), this.log, () => {
      this.fail('freeze', tmError('TM_ERR_CAPTURE', `the group's filesystems stayed frozen past ${this.timeoutMs} ms (the smallest freeze.timeoutMs of its volumes); thawed`));
    });
  }

  /** reflink: freeze all, clone every image, thaw all. Null when the cut failed (the cycle is fuzzy). */
  private async cutReflink(joining: GroupMember[]): Promise<Cut | null> {
    const fr = this.freezer(joining);
    const views = new Map<GroupMember, CapturedView>();
    try {
      await fr.freezeAll(Date.now() + this.timeoutMs);
      const atMs = this.instant();
      for (const m of joining) if (!fr.expired) views.set(m, { ...(await m.replicator.capture.begin()), atMs });
      await fr.thawAll();
      this.held(fr);
      if (!fr.expired) return { atMs, views, finish: async () => {} };
    } catch (e) {
      await fr.thawAll();
      this.fail('freeze and clone', e);
    }
    // Clones taken after an early thaw are not of the instant: drop them all.
    for (const v of views.values()) await v.release().catch(() => {});
    return null;
  }

  /** freeze: pre scripts, freeze all, each member read live while frozen and thawed once read; post scripts last. */
  private async cutFreeze(joining: GroupMember[]): Promise<Cut | null> {
    const deadline = Date.now() + this.timeoutMs;
    const fr = this.freezer(joining);
    const script = (m: GroupMember): FreezeCapture => m.replicator.capture as FreezeCapture;
    const finish = async (): Promise<void> => {
      await fr.thawAll();
      this.held(fr);
      for (const m of joining) {
        await script(m).script('post', m.config.freeze!.timeoutMs).catch((e) => this.fail(`post script of ${m.replicator.volumeId}`, e, 'post script failed; the point stands'));
      }
    };
    try {
      // The pre scripts and the time frozen share one bound, as for a single volume.
      for (const m of joining) await script(m).script('pre', Math.max(1, deadline - Date.now()));
      await fr.freezeAll(deadline);
    } catch (e) {
      this.fail('pre script or freeze', e);
      await finish();
      return null;
    }
    if (fr.expired) {
      await finish();
      return null;
    }
    const atMs = this.instant();
    const views = new Map<GroupMember, CapturedView>();
    for (const m of joining) {
      const mp = this.mountpoint(m);
      views.set(m, {
        view: m.replicator.volume,
        consistency: 'APP',
        tags: [m.config.freeze!.tag],
        atMs,
        // Read while frozen since the instant: a point, unless the bound thawed it first. Thawed at once
        // after: its later writes are not in the point, and the members still frozen keep the cut whole.
        settle: async () => {
          const ok = !fr.expired;
          await fr.thaw(mp);
          return ok;
        },
        release: () => fr.thaw(mp),
      });
    }
    return { atMs, views, finish };
  }

  private marker(m: GroupMember): StreamMarker {
    return m.replicator.tracker as unknown as StreamMarker;
  }

  /** Sum of the members' write counts right after the last data-mode cut's thaw. */
  private quietCount: number | null = null;
  private readonly streamGap = new MinGap(STREAM_MIN_GAP_MS);

  /**
   * Data mode: pre scripts, freeze all, a marker in each member's stream, thaw all, post scripts. The
   * members' streams up to their markers are the cut: every write any member completed before the freezes
   * is before its marker, none issued after the thaws is. Null (each member journals CRASH slices of its
   * own) when no cut is due or it failed.
   */
  private async cutStream(joining: GroupMember[]): Promise<Cut | null> {
    if (!this.streamGap.ready()) return null;
    // A cut no member can make a point of, or of nothing new (a freeze writes each superblock: without
    // this an idle group would freeze every cycle), is not worth holding the applications for.
    if (joining.length < this.members.length || joining.some((m) => !this.marker(m).pointPossible())) return null;
    const writes = (): number => joining.reduce((n, m) => n + this.marker(m).writeCount(), 0);
    if (this.quietCount !== null && writes() === this.quietCount) return null;
    this.streamGap.mark();
    const deadline = Date.now() + this.timeoutMs;
    const fr = this.freezer(joining);
    const capture = (m: GroupMember): DataFreezeCapture => m.replicator.capture as DataFreezeCapture;
    const post = async (): Promise<void> => {
      for (const m of joining) {
        await capture(m).script('post', m.config.freeze!.timeoutMs).catch((e) => this.fail(`post script of ${m.replicator.volumeId}`, e, 'post script failed; the point stands'));
      }
    };
    const tokens = new Map<GroupMember, number>();
    let atMs = 0;
    try {
      for (const m of joining) await capture(m).script('pre', Math.max(1, deadline - Date.now()));
      await fr.freezeAll(deadline);
      atMs = this.instant();
      for (const m of joining) {
        if (fr.expired) break;
        // A full ring empties as the reader takes records: retry briefly (the applications are held).
        let token: number | null = null;
        for (const end = performance.now() + MARK_RETRY_MS; token === null && !fr.expired; ) {
          token = this.marker(m).streamMark();
          if (token === null && performance.now() >= end) break;
          if (token === null) await new Promise((r) => setTimeout(r, 1));
        }
        if (token === null) throw tmError('TM_ERR_CAPTURE', `the data-mode ring of ${m.replicator.volumeId} stayed full for ${MARK_RETRY_MS} ms while frozen; no marker, no cut`);
        tokens.set(m, token);
      }
    } catch (e) {
      await fr.thawAll();
      this.held(fr);
      this.fail('pre script, freeze or stream marker', e);
      await post();
      return null;
    }
    await fr.thawAll();
    this.held(fr);
    this.quietCount = writes();
    await post();
    // The bound ran out before every marker was placed: the markers placed do not share one instant.
    if (fr.expired || tokens.size < joining.length) return null;
    const views = new Map<GroupMember, CapturedView>();
    for (const m of joining) {
      views.set(m, { view: m.replicator.volume, consistency: 'APP', tags: [m.config.freeze!.tag], atMs, streamMark: tokens.get(m)!, release: async () => {} });
    }
    return { atMs, views, finish: async () => {} };
  }

  private held(fr: GroupFreeze): void {
    this.stats.lastFrozenMs = Math.round(fr.heldMs);
    this.stats.maxFrozenMs = Math.max(this.stats.maxFrozenMs, this.stats.lastFrozenMs);
  }

  /** Record which members have journaled the pending cut as a point; decide it once all are done with it. */
  private settle(): void {
    const p = this.pending;
    if (!p) return;
    for (const m of this.members) {
      const r = m.replicator;
      const pt = [r.points.crash, r.points.app].find((x) => x?.tags.includes(p.tag));
      if (pt) p.seqs[r.volumeId] = pt.seq;
    }
    if (Object.keys(p.seqs).length === this.members.length) {
      this.lastPoint = { tag: p.tag, atMs: p.atMs, seqs: p.seqs };
      this.stats.points++;
      this.pending = null;
      this.log.debug({ tag: p.tag, seqs: p.seqs }, 'group point journaled');
    } else if (!this.members.some((m) => m.replicator.holding)) {
      this.stats.incomplete++;
      this.pending = null;
      const missing = this.members.map((m) => m.replicator.volumeId).filter((id) => p.seqs[id] === undefined);
      this.log.debug({ tag: p.tag, missing }, 'group point incomplete: not every member made it a point');
    }
  }

  private async attempt<T>(m: GroupMember, fn: () => Promise<T>): Promise<T | typeof FAILED> {
    try {
      return await fn();
    } catch (e) {
      this.opts.onError(m.replicator.volumeId, e);
      return FAILED;
    }
  }

  private fail(step: string, err: unknown, msg = 'group point dropped; this cycle is fuzzy for every member'): void {
    const e = wrap(err, `${step} of group ${this.name}`, { group: this.name });
    this.stats.failures++;
    this.stats.lastError = e.message;
    this.log.error({ code: 'TM_ERR_CAPTURE', cause: e.code, err: e.message }, msg);
  }

  status(): Record<string, unknown> {
    return { name: this.name, capture: this.capture, volumes: this.members.map((m) => m.replicator.volumeId), timeoutMs: this.timeoutMs, ...this.stats, lastPoint: this.lastPoint };
  }
}
