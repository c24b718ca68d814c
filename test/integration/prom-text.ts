// A strict parser of the Prometheus text exposition format 0.0.4, for the metrics tests: it accepts only
// what the format allows and throws, naming the line, on anything else, so a scrape that Prometheus
// would reject fails the test. https://prometheus.io/docs/instrumenting/exposition_formats/
// Checks: metric and label name syntax; label values quoted with only \\ \" \n escapes; no duplicate
// label; a float value (+Inf, -Inf, NaN allowed) and an optional integer timestamp; HELP/TYPE at most
// once per family and TYPE before the family's samples; each family in one contiguous group; sample
// names that belong to their family's type (_total counters, _bucket/_sum/_count); no duplicate
// series; histogram buckets with le, cumulative, ending in +Inf equal to _count.

import http from 'node:http';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
export interface Sample { name: string; labels: Record<string, string>; value: number }
export interface Family { name: string; type: MetricType; help: string | null; samples: Sample[] }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s: string, where: string): number {
  if (!FLOAT.test(s)) throw new Error(`${where}: "${s}" is not a float`);
  const l = s.toLowerCase().replace(/^\+/, '');
  if (l === 'nan') return NaN;
  if (l === 'inf' || l === 'infinity') return Infinity;
  if (l === '-inf' || l === '-infinity') return -Infinity;
  return Number(s);
}

/** name{labels} value [ts] -> Sample; the whole line must be consumed. */
function parseSample(line: string, where: string): Sample {
  const m = /^([^\s{]+)/.exec(line);
  if (!m || !NAME.test(m[1]!)) throw new Error(`${where}: bad metric name in "${line}"`);
  const name = m[1]!;
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ') i++;
      if (line[i] === '}') { i++; break; }
      const lm = /^[^=\s]+/.exec(line.slice(i));
      if (!lm || !LABEL.test(lm[0])) throw new Error(`${where}: bad label name at column ${i}`);
      const lname = lm[0];
      i += lname.length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`${where}: expected ="value" after label ${lname}`);
      i += 2;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) throw new Error(`${where}: unterminated value of label ${lname}`);
        i++;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i++];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`${where}: bad escape \\${e ?? ''} in label ${lname}`);
        } else {
          value += c;
        }
      }
      if (lname in labels) throw new Error(`${where}: label ${lname} given twice`);
      labels[lname] = value;
      while (line[i] === ' ') i++;
      if (line[i] === ',') { i++; continue; }
      if (line[i] === '}') { i++; break; }
      throw new Error(`${where}: expected , or } after label ${lname}`);
    }
  }
  const rest = line.slice(i);
  const parts = rest.trim().split(/[ \t]+/);
  if (!/^[ \t]/.test(rest) || parts.length < 1 || parts.length > 2 || parts[0] === '') throw new Error(`${where}: expected " value [timestamp]" after ${name}`);
  const value = parseValue(parts[0]!, where);
  if (parts.length === 2 && !/^-?\d+$/.test(parts[1]!)) throw new Error(`${where}: bad timestamp "${parts[1]}"`);
  return { name, labels, value };
}

/** The family a sample of this name belongs to, given the types declared so far. */
function familyOf(name: string, declared: Map<string, Family>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.endsWith(suffix) ? name.slice(0, -suffix.length) : null;
    const t = base === null ? undefined : declared.get(base)?.type;
    if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base!;
  }
  return name;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  const key = (l: Record<string, string>): string => JSON.stringify(Object.entries(l).filter(([k]) => k !== 'le').sort());
  for (const s of f.samples) {
    const g = groups.get(key(s.labels)) ?? { buckets: [] };
    groups.set(key(s.labels), g);
    if (s.name === `${f.name}_bucket`) {
      if (s.labels.le === undefined) throw new Error(`${f.name}: bucket without le`);
      g.buckets.push([parseValue(s.labels.le, f.name), s.value]);
    } else if (s.name === `${f.name}_count`) {
      g.count = s.value;
    }
  }
  for (const g of groups.values()) {
    const last = g.buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new Error(`${f.name}: histogram without a +Inf bucket`);
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0]) || g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`${f.name}: buckets not ascending and cumulative`);
    }
    if (g.count !== undefined && g.count !== last[1]) throw new Error(`${f.name}: _count ${g.count} differs from the +Inf bucket ${last[1]}`);
  }
}

export function parsePrometheusText(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('exposition text must end with a newline');
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  let current: string | null = null;
  const family = (name: string, where: string): Family => {
    if (current !== name) {
      if (closed.has(name)) throw new Error(`${where}: lines of ${name} are not in one group`);
      if (current !== null) closed.add(current);
      current = name;
    }
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', help: null, samples: [] }));
    return f;
  };
  const series = new Set<string>();
  const typed = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, n) => {
    const where = `line ${n + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!NAME.test(name!)) throw new Error(`${where}: bad metric name ${name}`);
      const f = family(name!, where);
      if (kind === 'HELP') {
        if (f.help !== null) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\[^\\n]|\\$/.test(rest)) throw new Error(`${where}: bad escape in HELP of ${name}`);
        f.help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      } else {
        if (typed.has(name!)) throw new Error(`${where}: second TYPE for ${name}`);
        if (f.samples.length > 0) throw new Error(`${where}: TYPE for ${name} after its samples`);
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type "${rest}"`);
        typed.add(name!);
        f.type = rest as MetricType;
      }
      return;
    }
    const s = parseSample(line, where);
    const f = family(familyOf(s.name, families), where);
    const allowed = f.type === 'histogram' ? [`${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`]
      : f.type === 'summary' ? [f.name, `${f.name}_sum`, `${f.name}_count`] : [f.name];
    if (!allowed.includes(s.name)) throw new Error(`${where}: ${s.name} is not a sample name of ${f.type} ${f.name}`);
    if (f.type === 'counter' && (s.value < 0 || Number.isNaN(s.value))) throw new Error(`${where}: counter ${s.name} is ${s.value}`);
    const id = `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
    if (series.has(id)) throw new Error(`${where}: duplicate series ${s.name}${JSON.stringify(s.labels)}`);
    series.add(id);
    f.samples.push(s);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined if none. */
export function sampleValue(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = fams.get(name);
  const hits = (f?.samples ?? []).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name}${JSON.stringify(labels)} matches ${hits.length} series`);
  return hits[0]?.value;
}

/** GET /metrics of a daemon on loopback, parsed strictly. */
export async function scrapeMetrics(port: number): Promise<Map<string, Family>> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 3000 }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve(b));
    }).on('error', reject).on('timeout', function (this: { destroy: (e: Error) => void }) { this.destroy(new Error('GET /metrics timed out')); });
  });
  return parsePrometheusText(text);
}
