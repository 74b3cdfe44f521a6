import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { goGlobMatch } from './globmatch.js';
import { cleanPath, compareGoStrings } from './gostrings.js';
import {
  compileGlob,
  cleanPath as exportedCleanPath,
  type MatchInfo,
  PatternError,
  PatternMatcher,
} from './patternmatcher.js';

// Tables ported from moby/patternmatcher patternmatcher_test.go (Unix cases).

type Pass = 'fail' | 'exact' | 'inexact';

const matchTable: Array<[pattern: string, text: string, pass: Pass]> = [
  ['**', 'file', 'exact'],
  ['**', 'file/', 'exact'],
  ['**/', 'file', 'exact'],
  ['**/', 'file/', 'exact'],
  ['**', '/', 'exact'],
  ['**/', '/', 'exact'],
  ['**', 'dir/file', 'exact'],
  ['**/', 'dir/file', 'exact'],
  ['**', 'dir/file/', 'exact'],
  ['**/', 'dir/file/', 'exact'],
  ['**/**', 'dir/file', 'exact'],
  ['**/**', 'dir/file/', 'exact'],
  ['dir/**', 'dir/file', 'exact'],
  ['dir/**', 'dir/file/', 'exact'],
  ['dir/**', 'dir/dir2/file', 'exact'],
  ['dir/**', 'dir/dir2/file/', 'exact'],
  ['**/dir', 'dir', 'exact'],
  ['**/dir', 'dir/file', 'inexact'],
  ['**/dir2/*', 'dir/dir2/file', 'exact'],
  ['**/dir2/*', 'dir/dir2/file/', 'inexact'],
  ['**/dir2/**', 'dir/dir2/dir3/file', 'exact'],
  ['**/dir2/**', 'dir/dir2/dir3/file/', 'exact'],
  ['**file', 'file', 'exact'],
  ['**file', 'dir/file', 'exact'],
  ['**/file', 'dir/file', 'exact'],
  ['**file', 'dir/dir/file', 'exact'],
  ['**/file', 'dir/dir/file', 'exact'],
  ['**/file*', 'dir/dir/file', 'exact'],
  ['**/file*', 'dir/dir/file.txt', 'exact'],
  ['**/file*txt', 'dir/dir/file.txt', 'exact'],
  ['**/file*.txt', 'dir/dir/file.txt', 'exact'],
  ['**/file*.txt*', 'dir/dir/file.txt', 'exact'],
  ['**/**/*.txt', 'dir/dir/file.txt', 'exact'],
  ['**/**/*.txt2', 'dir/dir/file.txt', 'fail'],
  ['**/*.txt', 'file.txt', 'exact'],
  ['**/**/*.txt', 'file.txt', 'exact'],
  ['a**/*.txt', 'a/file.txt', 'exact'],
  ['a**/*.txt', 'a/dir/file.txt', 'exact'],
  ['a**/*.txt', 'a/dir/dir/file.txt', 'exact'],
  ['a/*.txt', 'a/dir/file.txt', 'fail'],
  ['a/*.txt', 'a/file.txt', 'exact'],
  ['a/*.txt**', 'a/file.txt', 'exact'],
  ['a[b-d]e', 'ae', 'fail'],
  ['a[b-d]e', 'ace', 'exact'],
  ['a[b-d]e', 'aae', 'fail'],
  ['a[^b-d]e', 'aze', 'exact'],
  ['.*', '.foo', 'exact'],
  ['.*', 'foo', 'fail'],
  ['abc.def', 'abcdef', 'fail'],
  ['abc.def', 'abc.def', 'exact'],
  ['abc.def', 'abcZdef', 'fail'],
  ['abc?def', 'abcZdef', 'exact'],
  ['abc?def', 'abcdef', 'fail'],
  ['**/foo/bar', 'foo/bar', 'exact'],
  ['**/foo/bar', 'dir/foo/bar', 'exact'],
  ['**/foo/bar', 'dir/dir2/foo/bar', 'exact'],
  ['abc/**', 'abc', 'fail'],
  ['abc/**', 'abc/def', 'exact'],
  ['abc/**', 'abc/def/ghi', 'exact'],
  ['**/.foo', '.foo', 'exact'],
  ['**/.foo', 'bar.foo', 'fail'],
  ['a(b)c/def', 'a(b)c/def', 'exact'],
  ['a(b)c/def', 'a(b)c/xyz', 'fail'],
  ['a.|)$(}+{bc', 'a.|)$(}+{bc', 'exact'],
  [
    'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl',
    'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl',
    'exact',
  ],
  ['dist/*.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'exact'],
  ['a\\\\', 'a\\', 'exact'],
  ['a\\*b', 'a*b', 'exact'],
];

const multiPatternTable: Array<[patterns: string[], text: string, pass: Pass]> = [
  [['**', '!util/docker/web'], 'util/docker/web/foo', 'fail'],
  [['**', '!util/docker/web', 'util/docker/web/foo'], 'util/docker/web/foo', 'exact'],
  [
    ['**', '!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl'],
    'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl',
    'fail',
  ],
  [['**', '!dist/*.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'fail'],
];

/** Walks the parent directories down to `text`, as the fsutil walker feeds MatchInfo. */
function matchWithParentResults(pm: PatternMatcher, text: string): boolean {
  const parent = text.slice(0, Math.max(0, text.lastIndexOf('/')));
  let info: MatchInfo = [];
  if (cleanPath(parent) !== '.') {
    const dirs = cleanPath(parent).split('/');
    for (let i = 0; i < dirs.length; i++) {
      info = pm.matchesUsingParentResults(dirs.slice(0, i + 1).join('/'), info).info;
    }
  }
  return pm.matchesUsingParentResults(text, info).matched;
}

describe('PatternMatcher match tables', () => {
  it('MatchesExact', () => {
    for (const [pattern, text, pass] of matchTable) {
      assert.equal(
        new PatternMatcher([pattern]).matchesExact(text),
        pass === 'exact',
        `${pattern} ~ ${text}`,
      );
    }
  });

  it('MatchesOrParentMatches', () => {
    for (const [pattern, text, pass] of matchTable) {
      assert.equal(
        new PatternMatcher([pattern]).matchesOrParentMatches(text),
        pass !== 'fail',
        `${pattern} ~ ${text}`,
      );
    }
    for (const [patterns, text, pass] of multiPatternTable) {
      assert.equal(
        new PatternMatcher(patterns).matchesOrParentMatches(text),
        pass !== 'fail',
        `${patterns} ~ ${text}`,
      );
    }
  });

  it('MatchesUsingParentResults', () => {
    for (const [pattern, text, pass] of matchTable) {
      assert.equal(
        matchWithParentResults(new PatternMatcher([pattern]), text),
        pass !== 'fail',
        `${pattern} ~ ${text}`,
      );
    }
    for (const [patterns, text, pass] of multiPatternTable) {
      assert.equal(
        matchWithParentResults(new PatternMatcher(patterns), text),
        pass !== 'fail',
        `${patterns} ~ ${text}`,
      );
    }
  });

  it('MatchesUsingParentResults without context looks at parents itself', () => {
    for (const [pattern, text, pass] of matchTable) {
      const { matched } = new PatternMatcher([pattern]).matchesUsingParentResults(text);
      assert.equal(matched, pass !== 'fail', `${pattern} ~ ${text}`);
    }
    for (const [patterns, text, pass] of multiPatternTable) {
      assert.equal(new PatternMatcher(patterns).matchesUsingParentResults(text).matched, pass !== 'fail');
    }
  });

  it('rejects parent results of the wrong length', () => {
    assert.throws(() => new PatternMatcher(['a', 'b']).matchesUsingParentResults('a/b', [true]), RangeError);
  });
});

// Go's filepath.Match tests, as patternmatcher runs them: through the package-level
// MatchesOrParentMatches (file cleaned, "." never matches).
const filepathMatchTable: Array<[pattern: string, name: string, match: boolean, bad?: true]> = [
  ['abc', 'abc', true],
  ['*', 'abc', true],
  ['*c', 'abc', true],
  ['a*', 'a', true],
  ['a*', 'abc', true],
  ['a*', 'ab/c', true],
  ['a*/b', 'abc/b', true],
  ['a*/b', 'a/c/b', false],
  ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
  ['a*b?c*x', 'abxbbxdbxebxczzx', true],
  ['a*b?c*x', 'abxbbxdbxebxczzy', false],
  ['ab[c]', 'abc', true],
  ['ab[b-d]', 'abc', true],
  ['ab[e-g]', 'abc', false],
  ['ab[^c]', 'abc', false],
  ['ab[^b-d]', 'abc', false],
  ['ab[^e-g]', 'abc', true],
  ['a\\*b', 'a*b', true],
  ['a\\*b', 'ab', false],
  ['a?b', 'a☺b', true],
  ['a[^a]b', 'a☺b', true],
  ['a???b', 'a☺b', false],
  ['a[^a][^a][^a]b', 'a☺b', false],
  ['[a-ζ]*', 'α', true],
  ['*[a-ζ]', 'A', false],
  ['a?b', 'a/b', false],
  ['a*b', 'a/b', false],
  ['[\\]a]', ']', true],
  ['[\\-]', '-', true],
  ['[x\\-]', 'x', true],
  ['[x\\-]', '-', true],
  ['[x\\-]', 'z', false],
  ['[\\-x]', 'x', true],
  ['[\\-x]', '-', true],
  ['[\\-x]', 'a', false],
  ['[]a]', ']', false, true],
  ['[-]', '-', false, true],
  ['[x-]', 'x', false, true],
  ['[x-]', '-', false, true],
  ['[x-]', 'z', false, true],
  ['[-x]', 'x', false, true],
  ['[-x]', '-', false, true],
  ['[-x]', 'a', false, true],
  ['\\', 'a', false, true],
  ['[a-b-c]', 'a', false, true],
  ['[', 'a', false, true],
  ['[^', 'a', false, true],
  ['[^bc', 'a', false, true],
  ['a[', 'a', false, true],
  ['a[', 'ab', false, true],
  ['*x', 'xxx', true],
];

function packageMatches(file: string, patterns: string[]): boolean {
  const pm = new PatternMatcher(patterns);
  const cleaned = cleanPath(file);
  return cleaned !== '.' && pm.matchesOrParentMatches(cleaned);
}

describe('filepath.Match table through PatternMatcher', () => {
  for (const [pattern, name, match, bad] of filepathMatchTable) {
    it(`${pattern} ~ ${name}`, () => {
      if (bad) {
        assert.throws(
          () => packageMatches(name, [pattern]),
          (err: unknown) => err instanceof PatternError && err.code === 'BAD_PATTERN',
        );
      } else {
        assert.equal(packageMatches(name, [pattern]), match);
      }
    });
  }
});

describe('simple matches (patternmatcher_test.go)', () => {
  const cases: Array<[file: string, patterns: string[], want: boolean]> = [
    ['fileutils.go', ['*'], true],
    ['fileutils.go', ['*.go'], true],
    ['fileutils.go', ['!fileutils.go', '*.go'], true],
    ['docs/README.md', ['docs', '!docs/README.md'], false],
    ['docs/README.md', ['docs/', '!docs/README.md'], false],
    ['docs/README.md', ['docs/*', '!docs/README.md'], false],
    ['fileutils.go', ['*.go', '!fileutils.go'], false],
    ['.', ['*.go'], false],
    ['/any/path/there', [], false],
  ];
  for (const [file, patterns, want] of cases) {
    it(`${file} with [${patterns.join(', ')}]`, () => assert.equal(packageMatches(file, patterns), want));
  }

  it('rejects a lone "!" with a typed error', () => {
    assert.throws(
      () => new PatternMatcher(['!']),
      (err: unknown) => err instanceof PatternError && err.code === 'ILLEGAL_EXCLUSION_PATTERN',
    );
  });

  it('rejects a malformed pattern in the constructor', () => {
    assert.throws(() => new PatternMatcher(['[']), { code: 'BAD_PATTERN' });
  });
});

describe('pattern cleaning', () => {
  it('drops empty patterns and trims whitespace, keeping the exclusion flag', () => {
    assert.equal(new PatternMatcher(['docs', 'config', '']).patterns.length, 2);
    assert.equal(new PatternMatcher(['docs', '!docs/README.md']).exclusions(), true);
    assert.equal(new PatternMatcher(['docs', '  !docs/README.md']).exclusions(), true);
    assert.equal(new PatternMatcher(['docs', '!docs/README.md  ']).exclusions(), true);
    assert.equal(new PatternMatcher(['docs']).exclusions(), false);
  });

  it('cleans with filepath.Clean before removing the "!"', () => {
    const pm = new PatternMatcher(['./a/../b/', '!/c/./d', '!./e', 'f//g/']);
    assert.deepEqual(
      pm.patterns.map((p) => [p.cleaned, p.exclusion]),
      [
        ['b', false],
        ['/c/d', true],
        ['./e', true],
        ['f/g', false],
      ],
    );
    // A leading "/" survives Clean, so without the .dockerignore reader it never matches.
    assert.equal(new PatternMatcher(['/foo']).matchesOrParentMatches('foo'), false);
    assert.equal(new PatternMatcher(['./foo']).matchesOrParentMatches('foo'), true);
  });

  it('trims Go whitespace, not JavaScript whitespace', () => {
    assert.equal(new PatternMatcher(['\u0085foo\u0085']).patterns[0]?.cleaned, 'foo');
    assert.equal(new PatternMatcher(['\uFEFFfoo']).patterns[0]?.cleaned, '\uFEFFfoo');
  });
});

describe('compileGlob (TestCompile)', () => {
  const table: Array<[pattern: string, type: string, source: string]> = [
    ['*', 'regexp', '^[^/]*$'],
    ['file*', 'regexp', '^file[^/]*$'],
    ['*file', 'regexp', '^[^/]*file$'],
    ['a*/b', 'regexp', '^a[^/]*/b$'],
    ['**', 'suffix', ''],
    ['**/**', 'regexp', '^(.*/)?.*$'],
    ['dir/**', 'prefix', ''],
    ['**/dir', 'suffix', ''],
    ['**/dir2/*', 'regexp', '^(.*/)?dir2/[^/]*$'],
    ['**/dir2/**', 'regexp', '^(.*/)?dir2/.*$'],
    ['**file', 'suffix', ''],
    ['**/file*txt', 'regexp', '^(.*/)?file[^/]*txt$'],
    ['**/**/*.txt', 'regexp', '^(.*/)?(.*/)?[^/]*\\.txt$'],
    ['a[b-d]e', 'regexp', '^a[b-d]e$'],
    ['.*', 'regexp', '^\\.[^/]*$'],
    ['abc.def', 'exact', ''],
    ['abc?def', 'regexp', '^abc[^/]def$'],
    ['**/foo/bar', 'suffix', ''],
    ['a(b)c/def', 'exact', ''],
    ['a.|)$(}+{bc', 'exact', ''],
    ['dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'exact', ''],
  ];
  for (const [pattern, type, source] of table) {
    it(pattern, () => assert.deepEqual(compileGlob(cleanPath(pattern)), { type, source }));
  }
});

describe('regexp semantics copied from Go (RE2)', () => {
  const m = (pattern: string, path: string) => new PatternMatcher([pattern]).matchesExact(path);

  it('keeps RE2 escapes and classes that filepath.Match would read literally', () => {
    assert.equal(m('foo\\d*', 'foo1x'), true);
    assert.equal(m('foo\\d*', 'food'), false);
    assert.equal(m('[[:digit:]]*', '7up'), true);
    assert.equal(m('[[:digit:]]*', 'up'), false);
    assert.equal(m('a\\x41*', 'aAb'), true);
    assert.equal(m('[\\w]?', '_x'), true);
    assert.equal(m('[^[:alpha:]]', '1'), true);
  });

  it('lets a "?" or "*" inside brackets close the class early, as the generated regexp does', () => {
    // "[a?b]" becomes ^[a[^/]b]$: a class of a, [, ^, / followed by the literal "b]".
    assert.equal(m('[a?b]', '[b]'), true);
    assert.equal(m('[a?b]', 'a'), false);
    // "[**]" puts the whole (.*/)? group inside the class: one of ( . * / ) ?
    assert.equal(m('[**]', '?'), true);
  });

  it('treats \\Q as quoting the rest of the generated regexp', () => {
    assert.equal(m('a\\Qb*', 'ab[^/]*$'), true);
    assert.equal(m('a\\Qb*', 'abc'), false);
  });

  it('makes "." and "**" stop at newlines like Go, unlike "[^/]"', () => {
    assert.equal(m('a/**/b*', 'a/x\ny/bz'), false);
    assert.equal(m('a*b', 'a\nb'), true);
  });

  it('matches runes, not UTF-16 units', () => {
    assert.equal(m('a?b', 'a😀b'), true);
    assert.equal(m('a??b', 'a😀b'), false);
  });

  it('fails at match time, every time, when the regexp does not compile', () => {
    // filepath.Match accepts the reversed range l-O; RE2 does not (moby/moby#52203).
    const pm = new PatternMatcher(['[Local-Only]/']);
    for (let i = 0; i < 2; i++) {
      assert.throws(() => pm.matchesOrParentMatches('x'), { code: 'BAD_PATTERN' });
    }
    assert.throws(() => new PatternMatcher(['a\\1*']).matchesExact('a1'), { code: 'BAD_PATTERN' });
    assert.throws(() => new PatternMatcher(['[[:nope:]]']).matchesExact('a'), { code: 'BAD_PATTERN' });
    assert.throws(() => new PatternMatcher(['\\C*']).matchesExact('a'), { code: 'BAD_PATTERN' });
  });

  it('does not evaluate a pattern that cannot change the result', () => {
    // The broken exclusion is never reached for a path the first pattern does not match.
    assert.equal(new PatternMatcher(['foo', '![z-a]*']).matchesExact('bar'), false);
  });

  it('skips a leading byte order mark when compiling, like text/scanner', () => {
    assert.equal(m('\uFEFFfoo*', 'foobar'), true);
    assert.equal(m('\uFEFFfoo', 'foo'), false);
    // Go cuts "**" off the bytes, leaving the mark's last byte in front of the suffix.
    assert.equal(m('\uFEFF**x', 'a\uFEFF**x'), true);
    assert.equal(m('\uFEFF**x', 'a**x'), false);
  });
});

describe('Go helpers', () => {
  it('cleanPath is filepath.Clean', () => {
    const cases: Array<[string, string]> = [
      ['', '.'],
      ['abc', 'abc'],
      ['abc/def', 'abc/def'],
      ['a/b/c', 'a/b/c'],
      ['.', '.'],
      ['..', '..'],
      ['../..', '../..'],
      ['../../abc', '../../abc'],
      ['/abc', '/abc'],
      ['/', '/'],
      ['abc/', 'abc'],
      ['abc/def/', 'abc/def'],
      ['a/b/c/', 'a/b/c'],
      ['./', '.'],
      ['../', '..'],
      ['../../', '../..'],
      ['/abc/', '/abc'],
      ['abc//def//ghi', 'abc/def/ghi'],
      ['//abc', '/abc'],
      ['///abc', '/abc'],
      ['//abc//', '/abc'],
      ['abc//', 'abc'],
      ['abc/./def', 'abc/def'],
      ['/./abc/def', '/abc/def'],
      ['abc/.', 'abc'],
      ['abc/def/ghi/../jkl', 'abc/def/jkl'],
      ['abc/def/../ghi/../jkl', 'abc/jkl'],
      ['abc/def/..', 'abc'],
      ['abc/def/../..', '.'],
      ['/abc/def/../..', '/'],
      ['abc/def/../../..', '..'],
      ['/abc/def/../../..', '/'],
      ['abc/def/../../../ghi/jkl/../../../mno', '../../mno'],
      ['/../abc', '/abc'],
      ['abc/./../def', 'def'],
      ['abc//./../def', 'def'],
      ['abc/../../././../def', '../../def'],
    ];
    for (const [input, want] of cases) assert.equal(exportedCleanPath(input), want, input);
  });

  it('compareGoStrings orders by UTF-8 bytes', () => {
    const names = ['sub.dir', 'sub-dir', 'sub', 'Sub', '😀', '\uFFFD', 'é'];
    assert.deepEqual(names.sort(compareGoStrings), ['Sub', 'sub', 'sub-dir', 'sub.dir', 'é', '\uFFFD', '😀']);
  });

  it('goGlobMatch steps through names byte by byte like Go', () => {
    // "*" may stop inside the 3-byte rune, leaving two single bytes for the two "?".
    assert.equal(goGlobMatch('*??', '☺'), true);
    assert.equal(goGlobMatch('??', '☺'), false);
    assert.equal(goGlobMatch('dir/l*', 'dir/l1'), true);
  });
});
