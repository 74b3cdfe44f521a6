// Just enough of PromQL to name what an expression reads: the metrics it selects with their label
// matchers, and the labels it groups by. Enough to check the example alerts and dashboard under
// deploy/observability against a real /metrics; not a validator of PromQL syntax.

export interface PromQLRefs {
  metrics: Array<{ name: string; matchers: string[] }>;
  /** Labels named in by/without/on/ignoring/group_left/group_right lists. */
  grouping: string[];
}

const KEYWORDS = new Set([
  ...['sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'group'],
  ...['rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'histogram_quantile', 'abs', 'ceil', 'floor'],
  ...['clamp_min', 'clamp_max', 'round', 'scalar', 'vector', 'time', 'sort', 'sort_desc', 'absent'],
  ...['and', 'or', 'unless', 'bool', 'offset'],
]);
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

export function promqlRefs(expr: string): PromQLRefs {
  const refs: PromQLRefs = { metrics: [], grouping: [] };
  let i = 0;
  const skipString = () => {
    const quote = expr[i];
    i += 1;
    while (i < expr.length && expr[i] !== quote) i += expr[i] === '\\' ? 2 : 1;
    i += 1;
  };
  const skipSpace = () => {
    while (/\s/.test(expr[i] ?? '')) i += 1;
  };
  let last: PromQLRefs['metrics'][number] | undefined;
  while (i < expr.length) {
    const c = expr[i] as string;
    if (c === '"' || c === "'") skipString();
    else if (c === '[') i = expr.indexOf(']', i) + 1 || expr.length;
    else if (c === '{') {
      const start = i;
      i += 1;
      while (i < expr.length && expr[i] !== '}') {
        if (expr[i] === '"' || expr[i] === "'") skipString();
        else i += 1;
      }
      const body = expr.slice(start + 1, i);
      if (!last) throw new Error(`a selector without a metric name: ${expr}`);
      for (const m of body.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\]|\\.)*"|'[^']*')/g)) {
        last.matchers.push(m[1] as string);
      }
      i += 1;
      last = undefined;
    } else if (/[0-9.]/.test(c)) {
      const m = /^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?/i.exec(expr.slice(i));
      i += m ? m[0].length : 1;
    } else if (/[a-zA-Z_:]/.test(c)) {
      const word = (/^[a-zA-Z_:][\w:]*/.exec(expr.slice(i)) as RegExpExecArray)[0];
      i += word.length;
      last = undefined;
      if (GROUPING.has(word)) {
        skipSpace();
        if (expr[i] === '(') {
          const end = expr.indexOf(')', i);
          refs.grouping.push(
            ...expr
              .slice(i + 1, end)
              .split(',')
              .map((l) => l.trim())
              .filter(Boolean),
          );
          i = end + 1;
        }
      } else if (!KEYWORDS.has(word)) {
        last = { name: word, matchers: [] };
        refs.metrics.push(last);
      }
    } else {
      if (!/\s/.test(c)) last = undefined;
      i += 1;
    }
  }
  return refs;
}

export interface Scrape {
  /** Every sample name /metrics can give (a histogram's _bucket, _sum and _count). */
  names: Set<string>;
  /** The labels seen on each sample name's series. */
  labels: Map<string, Set<string>>;
}

/** Reads Prometheus' text format. */
export function parseScrape(text: string): Scrape {
  const scrape: Scrape = { names: new Set(), labels: new Map() };
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      const names = kind === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => name + s) : [name];
      for (const n of names) scrape.names.add(n);
      continue;
    }
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? /.exec(line);
    if (!sample) continue;
    const name = sample[1] as string;
    const labels = scrape.labels.get(name) ?? new Set<string>();
    scrape.labels.set(name, labels);
    for (const m of (sample[2] ?? '').matchAll(/([a-zA-Z_]\w*)="/g)) labels.add(m[1] as string);
  }
  return scrape;
}

/** Labels Prometheus adds to every series of a target. */
const TARGET_LABELS = ['instance', 'job'];

/** What in `expr` the scrape has not: unknown metrics, matchers or grouping labels; [] when all is there. */
export function missingFrom(scrape: Scrape, expr: string): string[] {
  const { metrics, grouping } = promqlRefs(expr);
  const problems: string[] = [];
  if (metrics.length === 0) problems.push(`no metric in ${expr}`);
  const known = new Set(TARGET_LABELS);
  for (const { name, matchers } of metrics) {
    if (!scrape.names.has(name)) {
      problems.push(`no metric ${name}`);
      continue;
    }
    const labels = scrape.labels.get(name) ?? new Set<string>();
    for (const l of labels) known.add(l);
    for (const l of matchers)
      if (!labels.has(l) && !TARGET_LABELS.includes(l)) problems.push(`${name} has no label ${l}`);
  }
  for (const l of grouping)
    if (!known.has(l)) problems.push(`no metric in the expression has the label ${l}`);
  return problems;
}
