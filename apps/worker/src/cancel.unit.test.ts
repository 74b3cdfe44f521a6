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

  test('shutDown aborts what runs as shutdown, leaves a canceled build canceled, and says it is stopping', () => {
    const active = new ActiveBuilds();
    const running = active.register('a');
    const canceled = active.register('b');
    active.cancel('b');
    assert.equal(active.isStopping, false);
    active.shutDown('the worker is shutting down');
    assert.equal(active.isStopping, true);
    assert.equal(abortOf(running.signal)?.kind, 'shutdown');
    assert.equal(abortOf(canceled.signal)?.kind, 'cancel');
  });

  test('two runs of one build (its job delivered again meanwhile): cancel and shutdown reach both', () => {
    const active = new ActiveBuilds();
    const first = active.register('a');
    const second = active.register('a');
    assert.equal(active.size, 2);
    assert.deepEqual(active.ids(), ['a']);
    // The second ends first: the first is still known here.
    active.unregister('a', second);
    assert.equal(active.size, 1);
    assert.equal(active.cancel('a'), true);
    assert.equal(abortOf(first.signal)?.kind, 'cancel');
    const other = new ActiveBuilds();
    const [x, y] = [other.register('x'), other.register('x')];
    other.shutDown('stopping');
    assert.deepEqual([abortOf(x.signal)?.kind, abortOf(y.signal)?.kind], ['shutdown', 'shutdown']);
  });

  test('a cancel that reached a running build still applies to its next attempt here', () => {
    const active = new ActiveBuilds();
    // Aborted while the run was already requeueing after an infrastructure failure: it does not
    // look at the abort again, the row goes back to queued, and this worker takes the retry.
    const first = active.register('a');
    assert.equal(active.cancel('a'), true);
    active.unregister('a', first);
    assert.equal(abortOf(active.register('a').signal)?.kind, 'cancel');
  });
});
