// What one fleet run left in PostgreSQL and storage, and the figures derived from it
// (fleet-measure.mjs): every submitted build present once, succeeded once, with its own output.

import fs from 'node:fs';
import path from 'node:path';
import { percentile, round } from './stats.mjs';

/** The runs' build rows, each with its attempts' outcomes (in order). */
export async function fetchRun(db, projectIds) {
  const { rows } = await db.query(
    `SELECT b.id, b.status, b.builder, b.attempts, b."artifactKey", b."cachedFromId",
            b.spec->'buildArgs'->>'FLEET_NONCE' AS nonce,
            extract(epoch FROM b."createdAt") * 1000 AS created,
            extract(epoch FROM b."startedAt") * 1000 AS started,
            extract(epoch FROM b."finishedAt") * 1000 AS finished,
            coalesce(array_agg(a.outcome ORDER BY a.number) FILTER (WHERE a.id IS NOT NULL), '{}') AS outcomes
       FROM "Build" b LEFT JOIN "BuildAttempt" a ON a."buildId" = b.id
      WHERE b."projectId" = ANY($1)
      GROUP BY b.id`,
    [projectIds],
  );
  return rows.map((r) => ({
    ...r,
    created: Number(r.created),
    started: r.started === null ? null : Number(r.started),
    finished: r.finished === null ? null : Number(r.finished),
  }));
}

const countBy = (xs, keyOf) => {
  const out = {};
  for (const x of xs) {
    const k = String(keyOf(x));
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
};

const percentiles = (xs) => ({
  p50: round(percentile(xs, 50), 2),
  p90: round(percentile(xs, 90), 2),
  p99: round(percentile(xs, 99), 2),
  max: round(Math.max(...xs), 2),
});

/**
 * Checks `rows` against what was `submitted` ([{id, nonce}]) and computes the run's figures.
 * `problems` lists every way the run fell short of "each build succeeded exactly once".
 */
export function checkRun({ rows, submitted, dataDir }) {
  const problems = [];
  const byId = new Map(rows.map((r) => [r.id, r]));
  const nonces = countBy(rows, (r) => r.nonce);
  const missing = submitted.filter((s) => !byId.has(s.id));
  if (missing.length > 0) problems.push(`${missing.length} submitted builds have no row`);
  if (rows.length !== submitted.length)
    problems.push(`${rows.length} rows for ${submitted.length} submitted builds`);
  const duplicated = Object.entries(nonces).filter(([, n]) => n > 1);
  if (duplicated.length > 0) problems.push(`${duplicated.length} build args appear on more than one row`);
  for (const s of submitted) {
    if (byId.get(s.id)?.nonce !== s.nonce)
      problems.push(`build ${s.id} does not carry its build arg ${s.nonce}`);
  }

  let succeededOnce = 0;
  let outputsChecked = 0;
  for (const r of rows) {
    const succeededAttempts = r.outcomes.filter((o) => o === 'succeeded').length;
    if (r.status !== 'succeeded') problems.push(`build ${r.id} is ${r.status}`);
    else if (r.cachedFromId) problems.push(`build ${r.id} was answered from the result cache`);
    else if (succeededAttempts !== 1)
      problems.push(`build ${r.id} has ${succeededAttempts} succeeded attempts`);
    else succeededOnce++;
    if (r.status === 'succeeded' && r.artifactKey) {
      // The artifact is the tar of /nonce: it must hold this build's own build arg.
      const file = path.join(dataDir, 'objects', ...r.artifactKey.split('/'));
      const bytes = fs.existsSync(file) ? fs.readFileSync(file) : undefined;
      if (!bytes) problems.push(`build ${r.id}: artifact ${r.artifactKey} is not stored`);
      else if (!bytes.includes(`${r.nonce}\n`)) problems.push(`build ${r.id}: artifact lacks its build arg`);
      else outputsChecked++;
    }
  }

  const done = rows.filter((r) => r.started !== null && r.finished !== null);
  const first = Math.min(...rows.map((r) => r.created));
  const last = Math.max(...done.map((r) => r.finished));
  const spanS = (last - first) / 1000;
  return {
    rows: rows.length,
    succeeded_once: succeededOnce,
    outputs_checked: outputsChecked,
    attempts: countBy(rows, (r) => r.attempts),
    attempt_outcomes: countBy(
      rows.flatMap((r) => r.outcomes),
      (o) => o ?? 'open',
    ),
    per_builder: countBy(rows, (r) => r.builder),
    span_s: round(spanS, 1),
    throughput_per_min: round((rows.length / spanS) * 60, 1),
    queue_wait_s: percentiles(done.map((r) => (r.started - r.created) / 1000)),
    run_s: percentiles(done.map((r) => (r.finished - r.started) / 1000)),
    problems,
  };
}
