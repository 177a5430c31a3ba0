"""Pure library: functions on (model, params, data) -> results. No printing, no files, no env vars."""
