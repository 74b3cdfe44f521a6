// node:test reporter that prints one final line: "N passed, N failed[, N skipped]".
//
// Leaf tests count: a test or suite whose subtests were reported is just a container,
// unless it failed for a reason of its own (a failing after() hook, an assertion after
// its subtests), so that a failing run never reports 0 failed.
// Subtests report before their parent, so a test at nesting n is a leaf unless some
// test at nesting n + 1 finished since the previous test at nesting n.
// The runner also reports each test file as a test named by its path: it passes even
// when it holds no tests (ignored) and fails when the file crashed (counted).
export default async function* summaryReporter(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const hasChildren = [];
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { nesting, name, file, skip, todo, details } = event.data;
    const leaf = !hasChildren[nesting];
    hasChildren[nesting] = false;
    if (nesting > 0) hasChildren[nesting - 1] = true;
    if (skip !== undefined || todo !== undefined) {
      skipped++;
    } else if (event.type === 'test:pass') {
      if (leaf && name !== file && details?.type !== 'suite') passed++;
    } else if (leaf || details?.error?.failureType !== 'subtestsFailed') {
      failed++;
    }
  }
  yield `${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}\n`;
}
