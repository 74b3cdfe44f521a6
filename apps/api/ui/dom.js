// Building DOM nodes without markup: every piece of data becomes a text node, so a build log or
// an error message holding "<script>" is shown as those characters, never parsed.

/**
 * `h('a', {href: '#/x', class: 'c'}, 'text', child)`: attributes are set as attributes (`on*`
 * keys as listeners, `false`/`null` skipped), children as nodes (strings as text).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** The page's element with this id: index.html has each one the scripts name. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/** Empties `el` and fills it with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const badge = (status) => h('span', { class: `badge ${status}`, 'data-status': status }, status);

export const time = (iso) => (iso ? h('time', { datetime: iso }, new Date(iso).toLocaleString()) : '—');

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function duration(startIso, endIso) {
  if (!startIso) return '—';
  const s = Math.max(
    0,
    Math.round(((endIso ? Date.parse(endIso) : Date.now()) - Date.parse(startIso)) / 1000),
  );
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}
