// The dashboard's pages. Each takes the element to fill and returns what stops it (timers, streams).
import { api, followLog, logText } from './api.js';
import { lines, stackedBars, timeline } from './charts.js';
import { BUILD_STATUSES, FINAL_STATUSES } from './contract.js';
import { badge, bytes, duration, h, replace, time } from './dom.js';

const FINAL = new Set(FINAL_STATUSES);
const PAGE = 20;

const buildPath = (id) => `/v1/builds/${encodeURIComponent(id)}`;
const outputOf = (spec) => (spec?.output ? `${spec.output.type ?? '?'} → ${spec.output.dest ?? ''}` : '—');

const errorText = (b) => (b.error ? `${b.error.code}: ${b.error.message}` : '');
const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

/** Runs `fn` now and every `ms`, never two at once; the returned function stops it. */
function every(ms, fn) {
  let timer;
  let stopped = false;
  const tick = async () => {
    await fn();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The builds of the project, newest first, filtered by status, refreshed every few seconds. */
export function buildsView(root, params, ctx) {
  const status = BUILD_STATUSES.includes(params.get('status')) ? params.get('status') : '';
  let pages = 1;
  const filter = h(
    'select',
    { id: 'status-filter', name: 'status' },
    h('option', { value: '' }, 'all'),
    BUILD_STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)),
  );
  filter.addEventListener('change', () => {
    location.hash = filter.value ? `#/builds?status=${filter.value}` : '#/builds';
  });
  const rows = h('tbody');
  const more = h('button', { type: 'button', id: 'load-more', hidden: true }, 'Load more');
  const empty = h('p', { class: 'muted', hidden: true }, status ? `No ${status} builds.` : 'No builds yet.');
  replace(
    root,
    h('div', { class: 'toolbar' }, h('h1', {}, 'Builds'), h('label', {}, 'Status ', filter)),
    h(
      'table',
      { class: 'builds', id: 'builds' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Build', 'Status', 'Output', 'Created', 'Duration', 'Error'].map((t) => h('th', {}, t)),
        ),
      ),
      rows,
    ),
    empty,
    more,
  );

  // The pages shown so far are all fetched again, so a build further down changes state too.
  const load = async () => {
    try {
      const items = [];
      let cursor = null;
      for (let i = 0; i < pages; i++) {
        const q = new URLSearchParams({ limit: String(PAGE) });
        if (status) q.set('status', status);
        if (cursor) q.set('cursor', cursor);
        const page = await api(`/v1/builds?${q}`);
        items.push(...page.items);
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      replace(
        rows,
        items.map((b) =>
          h(
            'tr',
            { 'data-id': b.id, 'data-status': b.status },
            h('td', {}, h('a', { href: `#/builds/${b.id}`, class: 'mono' }, b.id)),
            h('td', {}, badge(b.status)),
            h('td', {}, outputOf(b.spec)),
            h('td', {}, time(b.createdAt)),
            h('td', {}, duration(b.startedAt, b.finishedAt)),
            h('td', { class: 'error-cell', title: errorText(b) }, clip(errorText(b), 160)),
          ),
        ),
      );
      empty.hidden = items.length > 0;
      more.hidden = !cursor;
    } catch (err) {
      ctx.fail(err);
    }
  };
  more.addEventListener('click', () => {
    pages++;
    load();
  });
  return every(3000, load);
}

/**
 * One build: its fields, Cancel and Download, its steps as a timeline once it has ended, and its
 * log (followed live until the build ends).
 */
export function buildView(root, id, ctx) {
  const controller = new AbortController();
  const signal = controller.signal;
  const fields = h('dl', { class: 'fields', id: 'fields' });
  const log = h('pre', { class: 'log', id: 'log', 'aria-live': 'polite' });
  const logState = h('span', { class: 'muted', id: 'log-state' });
  const steps = h(
    'div',
    { class: 'charts', id: 'steps' },
    h('p', { class: 'muted' }, 'Shown once the build has ended.'),
  );
  const cancel = h('button', { type: 'button', id: 'cancel', class: 'danger', hidden: true }, 'Cancel');
  const download = h('button', { type: 'button', id: 'download', hidden: true }, 'Download');
  replace(
    root,
    h('p', {}, h('a', { href: '#/builds' }, '← Builds')),
    h('div', { class: 'toolbar' }, h('h1', {}, 'Build ', h('span', { class: 'mono' }, id)), cancel, download),
    fields,
    h('h2', {}, 'Steps'),
    steps,
    h('h2', {}, 'Log ', logState),
    log,
  );

  let build;
  let logStarted = false;
  let stepsShown = false;

  const showSteps = async () => {
    stepsShown = true;
    try {
      const { items, omitted } = await api(`${buildPath(id)}/steps`, { signal });
      replace(
        steps,
        items.length
          ? timeline('timeline', items)
          : h('p', { class: 'muted' }, 'No steps recorded (the build never reached BuildKit).'),
        omitted > 0 && h('p', { class: 'muted', id: 'steps-omitted' }, `${omitted} more steps, not listed.`),
      );
    } catch (err) {
      ctx.fail(err);
    }
  };
  let stopPolling = () => {};

  const appendLog = (text) => {
    // Keep following the end only if the reader was there already.
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(text));
    if (atEnd) log.scrollTop = log.scrollHeight;
  };

  const follow = async () => {
    logState.textContent = '(following)';
    for (;;) {
      try {
        const onLog = (text) => {
          appendLog(text);
          // Output means the build has started: show it now rather than at the next poll.
          if (build?.status === 'queued' && !refreshing) refresh();
        };
        const ended = await followLog(id, { onLog, onEnd: () => refresh(), signal });
        if (ended) break;
      } catch (err) {
        if (signal.aborted) return;
        ctx.fail(err);
      }
      if (signal.aborted) return;
      // The stream broke before the end: start again (the server replays the log from the start).
      await new Promise((r) => setTimeout(r, 2000));
      if (signal.aborted) return;
      log.replaceChildren();
    }
    logState.textContent = '';
  };

  const showLog = async () => {
    logStarted = true;
    if (!FINAL.has(build.status)) {
      follow();
      return;
    }
    try {
      log.textContent = await logText(id, signal);
    } catch (err) {
      ctx.fail(err);
    }
  };

  const field = (name, ...value) => [h('dt', {}, name), h('dd', { 'data-field': name }, ...value)];

  const render = (b) => {
    const a = b.artifact;
    replace(
      fields,
      field('Status', badge(b.status)),
      field('Output', outputOf(b.spec)),
      field('Spec', h('pre', { class: 'spec' }, JSON.stringify(b.spec, null, 2))),
      field('Context', b.context ? `${b.context.digest} (${bytes(b.context.size)})` : '—'),
      field('Platform', b.platform ?? '—'),
      field('Builder', b.builder ?? '—'),
      field('Attempts', String(b.attempts ?? 0)),
      field('Created', time(b.createdAt)),
      field('Started', time(b.startedAt)),
      field('Finished', time(b.finishedAt)),
      field('Duration', duration(b.startedAt, b.finishedAt)),
      b.cachedFrom
        ? field('Cached from', h('a', { href: `#/builds/${b.cachedFrom}`, class: 'mono' }, b.cachedFrom))
        : [],
      b.error ? field('Error', h('span', { class: 'error' }, errorText(b))) : [],
      a
        ? field(
            'Artifact',
            `${a.filename}, ${bytes(a.size)}`,
            h('br'),
            h('span', { class: 'mono' }, a.digest ?? ''),
          )
        : [],
    );
    cancel.hidden = FINAL.has(b.status);
    download.hidden = !a;
  };

  let refreshing = false;
  const refresh = async () => {
    refreshing = true;
    try {
      build = await api(buildPath(id), { signal });
      render(build);
      if (!logStarted) showLog();
      if (FINAL.has(build.status)) {
        stopPolling();
        if (!stepsShown) showSteps();
      }
    } catch (err) {
      ctx.fail(err);
    } finally {
      refreshing = false;
    }
  };

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      render(await api(`${buildPath(id)}/cancel`, { method: 'POST', signal }));
    } catch (err) {
      ctx.fail(err);
    } finally {
      cancel.disabled = false;
    }
  });

  download.addEventListener('click', async () => {
    try {
      // The view signs a fresh URL: the one on screen may have expired since.
      const fresh = await api(buildPath(id), { signal });
      if (!fresh.artifact) throw new Error(`build ${id} is ${fresh.status}: there is no artifact`);
      const link = h('a', { href: fresh.artifact.url, download: fresh.artifact.filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      ctx.fail(err);
    }
  });

  stopPolling = every(2000, refresh);
  return () => {
    stopPolling();
    controller.abort();
  };
}

/** The BuildKit daemons: health as the workers last saw it, load against capacity, what each can do. */
export function buildersView(root, ctx) {
  const rows = h('tbody');
  replace(
    root,
    h('h1', {}, 'Builders'),
    h(
      'table',
      { class: 'builders', id: 'builders' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Address', 'Health', 'Load', 'Platform', 'BuildKit', 'Can build', 'Checked', 'Last error'].map(
            (t) => h('th', {}, t),
          ),
        ),
      ),
      rows,
    ),
    h(
      'p',
      { class: 'muted' },
      'Health is what the workers report; "unknown" means no worker has checked the builder lately. ' +
        'BuildKit "< 0.11" is a daemon without a version RPC (dockerd 20.10 embeds 0.8); builds go only to builders that can build what they ask.',
    ),
  );
  const load = async () => {
    try {
      const { items } = await api('/v1/builders');
      replace(
        rows,
        items.map((b) => {
          const health = b.healthy === null ? 'unknown' : b.healthy ? 'healthy' : 'unhealthy';
          return h(
            'tr',
            { 'data-health': health },
            h('td', { class: 'mono' }, b.address),
            h('td', {}, badge(health)),
            h('td', {}, `${b.load} / ${b.concurrency}`),
            h('td', {}, b.platform ?? '—'),
            h('td', {}, b.capabilities ? (b.capabilities.version ?? '< 0.11') : '—'),
            h(
              'td',
              { class: 'muted' },
              b.capabilities ? [...b.capabilities.platforms, ...b.capabilities.features].join(', ') : '—',
            ),
            h('td', {}, time(b.checkedAt)),
            h('td', { class: 'error-cell' }, b.lastError ?? ''),
          );
        }),
      );
    } catch (err) {
      ctx.fail(err);
    }
  };
  return every(5000, load);
}

const HOURS = 6;
const OUTCOMES = [
  { key: 'succeeded', cls: 'succeeded' },
  { key: 'failed', cls: 'failed' },
  { key: 'canceled', cls: 'canceled' },
];

/** Builds waiting and builder slots: peaks of the API's samples, drawn for the operator only. */
const SERVICE_CHARTS = [
  {
    id: 'chart-queue',
    title: 'Queue: builds waiting and running (peak of each minute)',
    series: [
      { key: 'waiting', cls: 'waiting' },
      { key: 'running', cls: 'running' },
    ],
  },
  {
    id: 'chart-slots',
    title: 'Builder utilisation: slots used of slots usable (peak of each minute)',
    series: [
      { key: 'slotsUsed', cls: 'used' },
      { key: 'slotsCapacity', cls: 'capacity' },
    ],
  },
];
const serviceCharts = (minutes) =>
  SERVICE_CHARTS.flatMap(({ id, title, series }) => [
    h('h2', {}, title),
    lines(id, title, minutes, series, ''),
  ]);

/** Each project's builds over the window (operator). */
function projectsTable(projects) {
  const sum = (finished) => Object.values(finished).reduce((a, b) => a + b, 0);
  return h(
    'table',
    { id: 'projects' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Project', ...OUTCOMES.map(({ key }) => key), 'All', 'Result cache'].map((t) => h('th', {}, t)),
      ),
    ),
    h(
      'tbody',
      {},
      projects.map((p) => {
        const lookups = p.cacheHits + p.cacheMisses;
        return h(
          'tr',
          { 'data-project': p.name ?? p.id },
          h('td', {}, p.name ?? p.id),
          OUTCOMES.map(({ key }) => h('td', { 'data-outcome': key }, p.finished[key] ?? 0)),
          h('td', {}, sum(p.finished)),
          h('td', {}, lookups ? `${Math.round((100 * p.cacheHits) / lookups)}% of ${lookups}` : '—'),
        );
      }),
    ),
  );
}

/** The share of result-cache look-ups answered, in percent; null for a minute with none. */
const hitPercent = (hits, misses) => (hits + misses > 0 ? Math.round((100 * hits) / (hits + misses)) : null);

/**
 * The builds over the last hours: per minute by outcome, duration percentiles, cache hits; the
 * project's own with a project token, every project's with the operator's, who also sees the
 * queue, the builders' utilisation and each project's totals.
 */
export function statusView(root, ctx, { operator = false } = {}) {
  const summary = h('p', { id: 'status-summary' }, 'Loading…');
  const charts = h('div', { class: 'charts', id: 'charts' });
  replace(
    root,
    h('div', { class: 'toolbar' }, h('h1', {}, operator ? 'Status of every project' : 'Status')),
    summary,
    charts,
  );
  return every(30_000, async () => {
    try {
      const stats = await api(`${operator ? '/v1/admin/stats' : '/v1/stats'}?hours=${HOURS}`);
      const { minutes } = stats;
      const total = (key) => minutes.reduce((sum, m) => sum + (m.finished[key] ?? 0), 0);
      const hits = minutes.reduce((sum, m) => sum + m.cacheHits, 0);
      const lookups = hits + minutes.reduce((sum, m) => sum + m.cacheMisses, 0);
      replace(
        summary,
        `Last ${HOURS} hours: ${OUTCOMES.map(({ key }) => `${total(key)} ${key}`).join(', ')}; result cache `,
        lookups ? `${hitPercent(hits, lookups - hits)}% of ${lookups} look-ups answered` : 'not asked yet',
        '.',
      );
      replace(
        charts,
        h('h2', {}, 'Builds finished per minute'),
        stackedBars(
          'chart-builds',
          'Builds finished per minute',
          minutes,
          OUTCOMES,
          (m, k) => m.finished[k] ?? 0,
        ),
        h('h2', {}, 'Build duration, 50th and 90th percentile (bucket bounds)'),
        lines(
          'chart-durations',
          'Build duration percentiles',
          minutes,
          [
            { key: 'durationP50', cls: 'p50' },
            { key: 'durationP90', cls: 'p90' },
          ],
          ' s',
        ),
        h('h2', {}, 'Result cache: look-ups answered per minute'),
        lines(
          'chart-cache',
          'Result-cache hit ratio',
          minutes.map((m) => ({ ...m, hitPercent: hitPercent(m.cacheHits, m.cacheMisses) })),
          [{ key: 'hitPercent', cls: 'hits' }],
          ' %',
        ),
        operator ? [...serviceCharts(minutes), h('h2', {}, 'Projects'), projectsTable(stats.projects)] : [],
      );
    } catch (err) {
      ctx.fail(err);
    }
  });
}
