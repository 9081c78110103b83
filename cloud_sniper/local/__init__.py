"""The local runtime: the emulated account, the in-process Lambda runner and the local server."""
