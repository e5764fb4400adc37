"""Pure logic of the annotation bridge: label configs, results, ledgers, the simulated crew."""
