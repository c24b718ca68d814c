// The agent's configuration schema: closed (unknown keys are errors), defaults from common/defaults.ts.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { didYouMean, loadConfigFile, nodeNameSchema, operatorListenSchema, tlsSchema, volumeIdSchema, uniqueVolumeIds } from '../common/config.js';
import { GROUP_MAX_MEMBERS, GROUP_NAME } from '../proto/group-tag.js';

const d = DEFAULTS.agent;

export const agentVolumeSchema = z.strictObject({
  id: volumeIdSchema,
  /** Block device (/dev/sdb, /dev/loop3) or image file. */
  path: z.string().min(1),
  /**
   * scan: hash and compare (portable). blocktrace: kernel block tracepoints (Linux, root, block devices).
   * data: every write captured with its data by eBPF, a CRASH point every cycle (Linux x86-64, root,
   * request-based block devices; capture "none", or "freeze" or "script" for app-consistent tags marked in
   * the stream).
   */
  tracker: z.enum(['scan', 'blocktrace', 'data']).default(d.tracker),
  /**
   * none: live volume (fuzzy). reflink: clone of its image (crash-consistent). freeze: FIFREEZE
   * (app-consistent). script: the application quiesces itself in the pre script (app-consistent).
   */
  capture: z.enum(['none', 'reflink', 'freeze', 'script']).default(d.capture),
  reflink: z.strictObject({
    /** Where clones go; on the image's filesystem. Default: .tidemark-clones beside the image. */
    dir: z.string().min(1).optional(),
    /** Keep the clones of the last N recovery points as local snapshots. */
    keep: z.number().int().min(0).default(d.reflinkKeep),
  }).optional(),
  freeze: z.strictObject({
    /** Where the volume's filesystem is mounted. */
    mountpoint: z.string().min(1),
    /** Shell commands run before the freeze and after the thaw (e.g. a database checkpoint). */
    pre: z.string().min(1).optional(),
    post: z.string().min(1).optional(),
    /** Bound on each script and on the time frozen; past it: killed or thawed, tag dropped. */
    timeoutMs: z.number().int().min(100).max(600_000).default(d.freezeTimeoutMs),
    /** Name of the app-consistent points. */
    tag: z.string().regex(/^[\w.:@+-]{1,64}$/, 'a tag is 1-64 letters, digits or . : @ + - _').default(d.freezeTag),
    /** Tag one point per this interval (e.g. 3600000 for an "hourly" tag); the others are untagged app points. Absent: every point. */
    tagIntervalMs: z.number().int().min(1000).max(31 * 86_400_000).optional(),
  }).optional(),
  script: z.strictObject({
    /** Returns once the application has stopped writing and holds it stopped until the post script. */
    pre: z.string().min(1),
    post: z.string().min(1).optional(),
    /**
     * Bound on the pre script and the read together; past it the post script runs and the tag is dropped.
     * In data mode nothing is read: the bound is on each script, the application held only for a marker.
     */
    timeoutMs: z.number().int().min(100).max(600_000).default(d.freezeTimeoutMs),
    tag: z.string().regex(/^[\w.:@+-]{1,64}$/, 'a tag is 1-64 letters, digits or . : @ + - _').default(d.freezeTag),
    /** Tag one point per this interval (e.g. 3600000 for an "hourly" tag); the others are untagged app points. Absent: every point. */
    tagIntervalMs: z.number().int().min(1000).max(31 * 86_400_000).optional(),
  }).optional(),
}).superRefine((v, ctx) => {
  if (v.capture === 'freeze' && !v.freeze) ctx.addIssue({ code: 'custom', path: ['freeze'], message: 'capture "freeze" needs freeze.mountpoint' });
  if (v.tracker === 'data' && v.capture !== 'none' && v.capture !== 'freeze' && v.capture !== 'script') ctx.addIssue({ code: 'custom', path: ['capture'], message: `tracker "data" makes every differential a crash-consistent point by itself; it takes capture "none", or "freeze" or "script" for app-consistent tags (capture "${v.capture}" with data mode is not supported yet)` });
  if (v.capture === 'script' && !v.script) ctx.addIssue({ code: 'custom', path: ['script'], message: 'capture "script" needs script.pre (a command that returns once the application is quiesced)' });
});

export const agentConfigSchema = z.strictObject({
  name: nodeNameSchema,
  stateDir: z.string().min(1),
  tls: tlsSchema,
  /** `name`: the process server's certificate name (CN); a server presenting any other is refused. */
  processServer: z.strictObject({
    name: nodeNameSchema,
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(DEFAULTS.ports.processServer),
  }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  /** Operator actions over mutual TLS for a configuration server on another host (docs/SECURITY.md). */
  operatorListen: operatorListenSchema,
  blockSize: z.number().int().min(512).max(1024 * 1024).refine((n) => (n & (n - 1)) === 0, 'blockSize must be a power of two').default(d.blockSize),
  cycleIntervalMs: z.number().int().min(50).default(d.cycleIntervalMs),
  maxDiffBytes: z.number().int().min(1024 * 1024).max(256 * 1024 * 1024).default(d.maxDiffBytes),
  journalQuotaBytes: z.number().int().min(1024 * 1024).default(d.journalQuotaBytes),
  resyncWindowBytes: z.number().int().min(1024 * 1024).max(1024 * 1024 * 1024).default(d.resyncWindowBytes),
  window: z.number().int().min(1).max(64).default(DEFAULTS.transfer.window),
  /** Process server unreachable this long: stop journaling data and keep only the dirty map. */
  bitmapAfterMs: z.number().int().min(1000).default(d.bitmapAfterMs),
  /** Background verify: a capped, continuous comparison of each source with its replica (agent/background-verify.ts). */
  verify: z.strictObject({
    background: z.boolean().default(d.verify.background),
    bytesPerSecond: z.number().int().min(64 * 1024).default(d.verify.bytesPerSecond),
    startDelayMs: z.number().int().min(0).default(d.verify.startDelayMs),
    intervalMs: z.number().int().min(0).default(d.verify.intervalMs),
  }).default({ ...d.verify }),
  blocktrace: z.strictObject({
    /** Kernel ring buffer per CPU per volume: events kept between drains and while the agent is down. */
    bufferKiB: z.number().int().min(4).max(1024 * 1024).default(d.blocktrace.bufferKiB),
    drainIntervalMs: z.number().int().min(50).max(60_000).default(d.blocktrace.drainIntervalMs),
  }).default({ bufferKiB: d.blocktrace.bufferKiB, drainIntervalMs: d.blocktrace.drainIntervalMs }),
  /** Data mode (tracker "data"): kernel ring and reader, per volume (agent/trackers/data.ts). */
  data: z.strictObject({
    ringMiB: z.number().int().min(1).max(4096).refine((n) => (n & (n - 1)) === 0, 'ringMiB must be a power of two').default(d.data.ringMiB),
    queueMiB: z.number().int().min(1).max(65536).default(d.data.queueMiB),
    fifoPriority: z.number().int().min(0).max(99).default(d.data.fifoPriority),
    /** A data-mode volume on its own is collected this often (cycleIntervalMs paces the other trackers, groups and tags). */
    collectIntervalMs: z.number().int().min(50).max(60_000).default(d.data.collectIntervalMs),
  }).default({ ...d.data }),
  volumes: z.array(agentVolumeSchema).min(1).superRefine(uniqueVolumeIds),
  /** Consistency groups: volumes whose points are cut at one instant (agent/group.ts). */
  groups: z.array(z.strictObject({
    name: z.string().regex(GROUP_NAME, 'a group name is 1-40 letters, digits or . _ - (it goes into the tag cg:<name>:<ms>:<members>)'),
    volumes: z.array(volumeIdSchema).min(2, 'a group needs at least two volumes').max(GROUP_MAX_MEMBERS),
  })).default([]),
}).superRefine((c, ctx) => checkGroups(c.volumes, c.groups, ctx));

type VolumeCfg = z.output<typeof agentVolumeSchema>;

/**
 * A group's members must stop their writes together: each needs a filesystem to freeze. With capture
 * "freeze" the point is read live while every member is frozen (APP), or, in data mode, a marker is put in
 * each member's write stream while all are frozen (APP, a freeze of milliseconds); with "reflink" all
 * members are frozen, their images cloned and thawed (CRASH, a short freeze). Nothing else gives an instant shared by
 * several loop devices or disks.
 */
function checkGroups(volumes: VolumeCfg[], groups: Array<{ name: string; volumes: string[] }>, ctx: z.RefinementCtx): void {
  const ids = volumes.map((v) => v.id);
  const groupOf = new Map<string, string>();
  const names = new Set<string>();
  groups.forEach((g, gi) => {
    const issue = (message: string, ...at: Array<string | number>): void => ctx.addIssue({ code: 'custom', path: ['groups', gi, ...at], message });
    if (names.has(g.name)) issue(`there is already a group named "${g.name}"`, 'name');
    names.add(g.name);
    const members: VolumeCfg[] = [];
    g.volumes.forEach((id, vi) => {
      const v = volumes.find((x) => x.id === id);
      if (!v) return issue(`volume "${id}" is not among this agent's volumes; ${didYouMean(id, ids)}`, 'volumes', vi);
      const other = groupOf.get(id);
      if (other !== undefined) return issue(other === g.name ? `volume "${id}" is listed twice` : `volume "${id}" is already in group "${other}"; a volume can be in one group only`, 'volumes', vi);
      groupOf.set(id, g.name);
      if (v.tracker === 'data' && v.capture !== 'freeze') return issue(`volume "${id}" uses tracker "data" with capture "${v.capture}": a data-mode group member needs capture "freeze" (the group's cut is a marker in each member's write stream, placed while all are frozen)`, 'volumes', vi);
      if ((v.capture !== 'freeze' && v.capture !== 'reflink') || !v.freeze) {
        return issue(`volume "${id}" has capture "${v.capture}"${v.freeze ? '' : ' and no freeze.mountpoint'}: a group member needs capture "freeze", or "reflink" with freeze.mountpoint, because a cut at one instant across volumes needs all their writes stopped together (FIFREEZE) and nothing else gives one across loop devices or disks`, 'volumes', vi);
      }
      if (v.capture === 'reflink' && (v.freeze.pre || v.freeze.post)) {
        return issue(`volume "${id}": freeze.pre and freeze.post run only with capture "freeze"; a reflink group member uses freeze.mountpoint and freeze.timeoutMs only`, 'volumes', vi);
      }
      const same = members.find((m) => m.freeze!.mountpoint === v.freeze!.mountpoint);
      if (same) return issue(`volumes "${same.id}" and "${id}" have the same freeze.mountpoint ${v.freeze.mountpoint}; each member is its own filesystem`, 'volumes', vi);
      members.push(v);
    });
    const trackers = [...new Set(members.map((m) => (m.tracker === 'data' ? 'data' : 'other')))];
    if (trackers.length > 1) issue(`group "${g.name}" mixes tracker "data" with other trackers; a data-mode cut is a marker in each write stream, the others read while frozen: give all its volumes tracker "data", or none`, 'volumes');
    const kinds = [...new Set(members.map((m) => m.capture))];
    if (kinds.length > 1) issue(`group "${g.name}" mixes capture ${kinds.map((k) => `"${k}"`).join(' and ')}; a group point has one class: give all its volumes the same capture`, 'volumes');
  });
}

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentVolumeConfig = z.output<typeof agentVolumeSchema>;
export type AgentGroupConfig = AgentConfig['groups'][number];

export function loadAgentConfig(file: string): AgentConfig & { configDir: string } {
  return loadConfigFile(agentConfigSchema, file);
}
