"""Policy/trust plane: trust graph, grants, policy bundles, the gate, audit (issue 5)."""
