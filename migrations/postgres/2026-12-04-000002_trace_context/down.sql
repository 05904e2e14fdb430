ALTER TABLE results DROP COLUMN trace_context;
