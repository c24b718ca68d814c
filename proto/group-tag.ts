// The tag that marks a consistency group's point: `cg:<group>:<instant ms>:<members>`. The agent puts it on
// the differential that completes each member's point of one cut; the master target pairs the volumes by
// it. The member count is in the tag because the master target does not know the agent's groups: a cut
// whose tag reached fewer volumes than it names (a member resyncing, fuzzy, or not yet arrived) is not a
// group point.

/** A group name: it must leave room in a 64-character tag, and it may not contain the `:` separator. */
export const GROUP_NAME = /^[A-Za-z0-9._-]{1,40}$/;
/** At most this many volumes in one group (keeps the tag within 64 characters). */
export const GROUP_MAX_MEMBERS = 999;

export interface GroupTag {
  group: string;
  /** The instant every member's writes were stopped (ms since the epoch): also the cut's identity. */
  atMs: number;
  /** How many volumes the cut was taken across. */
  members: number;
}

export function formatGroupTag(t: GroupTag): string {
  return `cg:${t.group}:${t.atMs}:${t.members}`;
}

/** The group point a tag names, or null when it is not a group tag. */
export function parseGroupTag(tag: string): GroupTag | null {
  const m = /^cg:([A-Za-z0-9._-]{1,40}):(\d{1,16}):(\d{1,3})$/.exec(tag);
  if (!m) return null;
  const members = Number(m[3]);
  return members >= 1 ? { group: m[1]!, atMs: Number(m[2]), members } : null;
}
