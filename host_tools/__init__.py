"""midge host tools: the CPython `midge` command (flash, deploy, provision, repl, test, pub, sub, ...)."""
