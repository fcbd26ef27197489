"""Message plane: the commit-backed bus (issue 6)."""
