"""State plane: deterministic folds (sandboxed Lua 5.4), checkpoints, Proof-of-Fold (issue 4)."""
