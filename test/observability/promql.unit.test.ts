import assert from 'node:assert/strict';
import { test } from 'node:test';
import { missingFrom, parseScrape, promqlRefs } from './promql.js';

test('names the metrics, matchers and grouping labels of an expression', () => {
  assert.deepEqual(
    promqlRefs(
      'histogram_quantile(0.9, sum by (le, project) (max without (instance) (rate(kiln_a_bucket{outcome="x",route!~"/v1/{id}"}[$__rate_interval])))) > 5e6 and kiln_b == 0',
    ),
    {
      metrics: [
        { name: 'kiln_a_bucket', matchers: ['outcome', 'route'] },
        { name: 'kiln_b', matchers: [] },
      ],
      grouping: ['le', 'project', 'instance'],
    },
  );
});

const scrape = parseScrape(
  [
    '# HELP kiln_h h',
    '# TYPE kiln_h histogram',
    'kiln_h_bucket{outcome="succeeded",le="+Inf"} 1',
    '# TYPE kiln_c counter',
    'kiln_c{status="delivered"} 0',
    '',
  ].join('\n'),
);

test('an expression on what the scrape has passes; a wrong metric, matcher or grouping label is named', () => {
  assert.deepEqual(missingFrom(scrape, 'sum by (le) (rate(kiln_h_bucket{outcome="failed"}[5m]))'), []);
  assert.deepEqual(missingFrom(scrape, 'max without (instance) (kiln_c{status="failed"})'), []);
  assert.deepEqual(missingFrom(scrape, 'kiln_h_count'), []);
  assert.deepEqual(missingFrom(scrape, 'rate(kiln_nope[5m])'), ['no metric kiln_nope']);
  assert.deepEqual(missingFrom(scrape, 'kiln_c{state="x"}'), ['kiln_c has no label state']);
  assert.deepEqual(missingFrom(scrape, 'sum by (project) (kiln_c)'), [
    'no metric in the expression has the label project',
  ]);
  assert.deepEqual(missingFrom(scrape, '1 + 1'), ['no metric in 1 + 1']);
});
