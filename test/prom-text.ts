// A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: it throws on
// anything a Prometheus server would reject, and returns the samples so tests can check values.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Values are read like Go's strconv.ParseFloat, as Prometheus does (so `Nan`, `+inf` are valid). */
function parseValue(text: string, where: string): number {
  const lower = text.toLowerCase();
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity') return Infinity;
  if (lower === '-inf' || lower === '-infinity') return -Infinity;
  if (lower === 'nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value "${text}"`);
  return Number(text);
}

/** Parses `{a="x",b="y"}` starting at `i`; returns the labels and the index after `}`. */
function parseLabels(line: string, start: number, where: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let i = start + 1;
  while (line[i] !== '}') {
    const eq = line.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without "="`);
    const name = line.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name "${name}"`);
    if (name in labels) throw new Error(`${where}: duplicate label "${name}"`);
    if (line[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let value = '';
    let j = eq + 2;
    for (; j < line.length && line[j] !== '"'; j++) {
      if (line[j] === '\\') {
        const next = line[++j];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`${where}: bad escape "\\${next}" in label value`);
      } else value += line[j];
    }
    if (j >= line.length) throw new Error(`${where}: unterminated label value`);
    labels[name] = value;
    i = j + 1;
    if (line[i] === ',') i++;
    else if (line[i] !== '}') throw new Error(`${where}: expected "," or "}" after label value`);
  }
  return [labels, i + 1];
}

function familyOf(sampleName: string, families: Map<string, MetricFamily>): MetricFamily | undefined {
  if (families.has(sampleName)) return families.get(sampleName);
  for (const suffix of ['_bucket', '_count', '_sum']) {
    if (sampleName.endsWith(suffix)) {
      const family = families.get(sampleName.slice(0, -suffix.length));
      if (family && (family.type === 'histogram' || family.type === 'summary')) return family;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, MetricFamily>();
  const finished = new Set<string>();
  let current: MetricFamily | undefined;
  const seen = new Set<string>();

  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, index) => {
      const where = `line ${index + 1}`;
      if (line === '') return;
      if (line.startsWith('#')) {
        const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
        if (!m) return; // other comments are allowed
        const [, kind, name, rest] = m as unknown as [string, string, string, string];
        if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name "${name}"`);
        if (finished.has(name)) throw new Error(`${where}: metric family "${name}" is not contiguous`);
        let family = families.get(name);
        if (!family) {
          family = { name, type: 'untyped', help: '', samples: [] };
          families.set(name, family);
        }
        if (current && current !== family) finished.add(current.name);
        current = family;
        if (kind === 'TYPE') {
          if (!TYPES.has(rest)) throw new Error(`${where}: unknown type "${rest}"`);
          if (family.samples.length > 0) throw new Error(`${where}: TYPE after samples of "${name}"`);
          family.type = rest as MetricFamily['type'];
        } else family.help = rest;
        return;
      }
      const nameEnd = line.search(/[{ ]/);
      if (nameEnd <= 0) throw new Error(`${where}: not a sample: "${line}"`);
      const name = line.slice(0, nameEnd);
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name "${name}"`);
      let labels: Record<string, string> = {};
      let i = nameEnd;
      if (line[i] === '{') [labels, i] = parseLabels(line, i, where);
      if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
      const [valueText, timestamp, extra] = line.slice(i + 1).split(' ');
      if (extra !== undefined || (timestamp !== undefined && !/^-?\d+$/.test(timestamp)))
        throw new Error(`${where}: trailing garbage`);
      const value = parseValue(valueText ?? '', where);

      let family = familyOf(name, families);
      if (!family) {
        family = { name, type: 'untyped', help: '', samples: [] };
        families.set(name, family);
      }
      if (finished.has(family.name)) throw new Error(`${where}: metric family "${family.name}" is not contiguous`);
      if (current && current !== family) finished.add(current.name);
      current = family;
      const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      if (seen.has(key)) throw new Error(`${where}: duplicate sample ${key}`);
      seen.add(key);
      if (family.type === 'counter' && (value < 0 || Number.isNaN(value)))
        throw new Error(`${where}: counter "${name}" is ${value}`);
      family.samples.push({ name, labels, value });
    });

  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/** Buckets are cumulative, end at +Inf, and the +Inf bucket equals _count, for every label set. */
function checkHistogram(family: MetricFamily): void {
  const series = new Map<string, { buckets: [number, number][]; count?: number; sum?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name === `${family.name}_bucket`) {
      if (le === undefined) throw new Error(`${family.name}: bucket without le`);
      entry.buckets.push([parseValue(le, family.name), s.value]);
    } else if (s.name === `${family.name}_count`) entry.count = s.value;
    else if (s.name === `${family.name}_sum`) entry.sum = s.value;
    else throw new Error(`${family.name}: unexpected sample ${s.name}`);
  }
  for (const [key, { buckets, count, sum }] of series) {
    if (count === undefined || sum === undefined) throw new Error(`${family.name}${key}: missing _count or _sum`);
    const last = buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new Error(`${family.name}${key}: no +Inf bucket`);
    if (last[1] !== count) throw new Error(`${family.name}${key}: +Inf bucket ${last[1]} != _count ${count}`);
    for (let i = 1; i < buckets.length; i++) {
      if (buckets[i]![0] <= buckets[i - 1]![0] || buckets[i]![1] < buckets[i - 1]![1]) {
        throw new Error(`${family.name}${key}: buckets not increasing and cumulative`);
      }
    }
  }
}

/** Value of the one sample named `name` whose labels include `labels` (0 when absent). */
export function sampleValue(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number {
  const family = familyOf(name, families);
  const matches = (family?.samples ?? []).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (matches.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${matches.length} samples`);
  return matches[0]?.value ?? 0;
}

/** Number of samples named `name` (for a counter: its series count). */
export function seriesCount(families: Map<string, MetricFamily>, name: string): number {
  const family = familyOf(name, families);
  return (family?.samples ?? []).filter((s) => s.name === name).length;
}
