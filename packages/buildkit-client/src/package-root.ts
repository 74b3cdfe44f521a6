/**
 * The package's own directory (holding package.json). This module sits one level
 * below it in src/ and in dist/, and bkctl's bundle (dist/bkctl.bundle.cjs), which inlines it,
 * does too: import.meta.url is then the bundle's (scripts/bundle-bkctl.mjs defines it there).
 */
export const PACKAGE_ROOT = new URL('../', import.meta.url);
