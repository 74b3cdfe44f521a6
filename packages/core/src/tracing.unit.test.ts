import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { NO_TRACING } from './tracing.js';

test('with tracing off nothing is carried, and run still passes results and errors through', async () => {
  const { context, span } = NO_TRACING.start('x', ROOT_CONTEXT);
  assert.equal(span.isRecording(), false);
  assert.equal(NO_TRACING.traceparent(context), undefined);
  // A caller's traceparent is not continued either: there is nothing to send it to.
  const continued = NO_TRACING.continueFrom('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  assert.equal(continued, ROOT_CONTEXT);
  assert.equal(trace.getSpan(continued), undefined);
  assert.equal(await NO_TRACING.run('y', ROOT_CONTEXT, async () => 42), 42);
  await assert.rejects(
    NO_TRACING.run('z', ROOT_CONTEXT, async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
});
