// Small SVG charts built node by node (no markup, no inline style: the page's CSP allows neither).
// Colours come from classes in style.css.

const SVG = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children)
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

const W = 960;
const H = 160;
const PAD = 30;
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/** The frame shared by both charts: the largest value on the left, the first and last minute below. */
function frame(id, label, points, max, unit) {
  const svg = s('svg', { id, viewBox: `0 0 ${W} ${H + PAD}`, role: 'img', 'aria-label': label });
  svg.append(
    s('line', { class: 'axis', x1: PAD, y1: H, x2: W, y2: H }),
    s('text', { class: 'tick', x: 0, y: 12 }, `${max}${unit}`),
    s('text', { class: 'tick', x: PAD, y: H + 20 }, points.length ? clock(points[0].at) : ''),
    s(
      'text',
      { class: 'tick', x: W, y: H + 20, 'text-anchor': 'end' },
      points.length ? clock(points.at(-1).at) : '',
    ),
  );
  return svg;
}

/** One bar per minute, stacked by `series` ([{key, cls}], values from `countOf(minute, key)`). */
export function stackedBars(id, label, minutes, series, countOf) {
  const totals = minutes.map((m) => series.reduce((sum, { key }) => sum + countOf(m, key), 0));
  const max = Math.max(1, ...totals);
  const svg = frame(id, label, minutes, max, '');
  const step = (W - PAD) / Math.max(1, minutes.length);
  minutes.forEach((m, i) => {
    let y = H;
    for (const { key, cls } of series) {
      const n = countOf(m, key);
      if (n === 0) continue;
      const height = (n / max) * (H - 10);
      y -= height;
      svg.append(
        s(
          'rect',
          { class: cls, x: PAD + i * step, y, width: Math.max(1, step - 1), height, 'data-count': n },
          s('title', {}, `${clock(m.at)}: ${n} ${key}`),
        ),
      );
    }
  });
  return svg;
}

/** One line per series ([{key, cls}]) through the minutes whose value is not null. */
export function lines(id, label, minutes, series, unit) {
  const values = minutes.flatMap((m) => series.map(({ key }) => m[key]).filter((v) => v !== null));
  const max = Math.max(1, ...values);
  const svg = frame(id, label, minutes, max, unit);
  const step = (W - PAD) / Math.max(1, minutes.length);
  for (const { key, cls } of series) {
    const points = minutes
      .map((m, i) =>
        m[key] === null ? null : [PAD + i * step + step / 2, H - (m[key] / max) * (H - 10), m[key]],
      )
      .filter(Boolean);
    svg.append(s('polyline', { class: cls, points: points.map(([x, y]) => `${x},${y}`).join(' ') }));
    for (const [x, y, value] of points)
      svg.append(s('circle', { class: cls, cx: x, cy: y, r: 3, 'data-value': value }));
  }
  return svg;
}

const ROW = 22;
const LABEL = 380;

/** A solve's steps on one time axis, one row each: cached, run or failed (BuildStep[] from the API). */
export function timeline(id, steps) {
  const times = steps
    .flatMap((st) => [st.started, st.completed])
    .filter(Boolean)
    .map(Date.parse);
  const t0 = Math.min(...times);
  const span = Math.max(1, Math.max(...times) - t0);
  const svg = s('svg', {
    id,
    viewBox: `0 0 ${W} ${steps.length * ROW + 4}`,
    role: 'img',
    'aria-label': 'Steps',
  });
  steps.forEach((st, i) => {
    const start = Date.parse(st.started ?? st.completed ?? new Date(t0).toISOString());
    const end = Date.parse(st.completed ?? st.started ?? new Date(t0).toISOString());
    const kind = st.error ? 'failed' : st.cached ? 'cached' : 'run';
    const x = LABEL + ((start - t0) / span) * (W - LABEL);
    const width = Math.max(3, ((end - start) / span) * (W - LABEL));
    const name = st.name.length > 52 ? `${st.name.slice(0, 51)}…` : st.name;
    svg.append(
      s('text', { class: 'step', x: 0, y: i * ROW + 15 }, name),
      s(
        'rect',
        { class: kind, x: Math.min(x, W - 3), y: i * ROW + 4, width, height: ROW - 8, 'data-kind': kind },
        s('title', {}, `${st.name}: ${kind}, ${((end - start) / 1000).toFixed(1)} s`),
      ),
    );
  });
  return svg;
}
