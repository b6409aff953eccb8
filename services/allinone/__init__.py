"""`make run`: the whole system in one process, on one machine, with real backing servers."""
