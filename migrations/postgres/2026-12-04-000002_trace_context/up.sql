-- The W3C traceparent of the webhook span that brought each result ('' when traces are off
-- or the result was made here): the span that pushes it on a stream links back to the
-- intake on whichever replica serves the stream (README: Operating it, Traces).
ALTER TABLE results ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';
