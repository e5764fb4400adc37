"""Pure sampling logic: selection strategies, batch composition, pacing and the sampler ledger."""
