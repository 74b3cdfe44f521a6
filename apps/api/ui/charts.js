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
      .map((m, i) => (m[key] === null ? null : [PAD + i * step + step / 2, H - (m[key] / max) * (H - 10)]))
      .filter(Boolean);
    svg.append(s('polyline', { class: cls, points: points.map((p) => p.join(',')).join(' ') }));
    for (const [x, y] of points) svg.append(s('circle', { class: cls, cx: x, cy: y, r: 3 }));
  }
  return svg;
}
