import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BUILD_DURATION_BUCKETS } from './buckets.js';
import { bucketQuantile } from './minute-stats.js';

test('a quantile is the upper bound of the bucket holding it; none without builds; +Inf as twice the last bound', () => {
  const counts = new Array(BUILD_DURATION_BUCKETS.length + 1).fill(0);
  assert.equal(bucketQuantile(counts, 0.5), null);
  counts[2] = 5; // ≤ 5 s
  counts[4] = 4; // ≤ 30 s
  counts[BUILD_DURATION_BUCKETS.length] = 1; // > 3600 s
  assert.equal(bucketQuantile(counts, 0.5), 5);
  assert.equal(bucketQuantile(counts, 0.9), 30);
  assert.equal(bucketQuantile(counts, 1), 7200);
});
