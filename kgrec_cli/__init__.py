"""Entry points: the `kgrec` command line and `kgrec up`, the one layer that imports `app` and `workers`."""
