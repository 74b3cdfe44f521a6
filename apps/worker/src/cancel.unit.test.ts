// The cancel helpers: parsing cancel messages, aborting running builds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ActiveBuilds, abortOf } from './active-builds.js';
import { parseCancelMessage } from './cancel.js';

describe('cancel helpers', () => {
  test('parseCancelMessage takes a plain id or JSON', () => {
    assert.equal(parseCancelMessage('01ABC\n'), '01ABC');
    assert.equal(parseCancelMessage('{"buildId":"01ABC"}'), '01ABC');
    assert.equal(parseCancelMessage('{"nope":1}'), undefined);
    assert.equal(parseCancelMessage('{broken'), undefined);
    assert.equal(parseCancelMessage('  '), undefined);
  });

  test('ActiveBuilds aborts running builds and remembers early cancels', async () => {
    const active = new ActiveBuilds();
    const c = active.register('a');
    assert.equal(active.cancel('a'), true);
    assert.equal(abortOf(c.signal)?.kind, 'cancel');
    // A cancel that arrives before the build registers is applied when it does.
    assert.equal(active.cancel('b'), false);
    const d = active.register('b');
    assert.equal(abortOf(d.signal)?.kind, 'cancel');
    const idle = active.whenIdle();
    active.unregister('a', c);
    active.unregister('b', d);
    await idle;
    assert.equal(active.size, 0);
  });
});
