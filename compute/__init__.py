"""Job plane: manifests, claims, sandboxed runners, Proof-of-Execution (issue 7)."""
