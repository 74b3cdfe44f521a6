// Shared start of the report scripts: read the JSON a measure script wrote, record the run's
// total duration in it (written atomically), and hand back the results and the Markdown path.
import fs from 'node:fs';
import { round } from './stats.mjs';

export function completeResults(script) {
  const [jsonPath, mdPath, startEpoch] = process.argv.slice(2);
  if (!jsonPath || !mdPath || !startEpoch) {
    process.stderr.write(`usage: ${script} RESULTS.json RESULTS.md START_EPOCH_SECONDS\n`);
    process.exit(2);
  }
  const r = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  r.total_duration_s = round(Date.now() / 1000 - Number(startEpoch), 1);
  fs.writeFileSync(`${jsonPath}.tmp`, `${JSON.stringify(r, null, 2)}\n`);
  fs.renameSync(`${jsonPath}.tmp`, jsonPath);
  return { r, jsonPath, mdPath };
}
