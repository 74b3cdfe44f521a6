import assert from 'node:assert/strict';
import { test } from 'node:test';
import { frontendDirective } from './syntax-directive.js';

const of = (text: string, complete = true) => frontendDirective(Buffer.from(text), complete);

test('finds the syntax directive in each form BuildKit reads', () => {
  for (const text of [
    '# syntax=docker/dockerfile:1\nFROM scratch\n',
    '#syntax = docker/dockerfile:1 \r\nFROM scratch\n',
    '\uFEFF# escape=`\n# SYNTAX=docker/dockerfile:1\nFROM scratch\n',
    '// syntax=docker/dockerfile:1\nFROM scratch\n',
    '\n# a comment first\n\n# syntax=docker/dockerfile:1\nFROM scratch\n',
    '{"syntax": "docker/dockerfile:1"}',
  ]) {
    assert.deepEqual(of(text), { kind: 'image', image: 'docker/dockerfile:1' }, JSON.stringify(text));
  }
});

test('no directive: none; a directive after the first instruction does not count', () => {
  for (const text of [
    'FROM scratch\n',
    'FROM scratch\n# syntax=docker/dockerfile:1\n',
    '# just a comment\nFROM scratch\n',
    '{not json',
    '{"other": 1}',
  ]) {
    assert.deepEqual(of(text), { kind: 'none' }, text);
  }
});

test('a JSON file longer than the head kept cannot be told', () => {
  assert.deepEqual(of('{"a": "', false), { kind: 'unknown' });
});
