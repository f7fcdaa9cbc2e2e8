"""What each ``fisc`` subcommand does, given its parsed arguments (an ``argparse.Namespace``):
``cmd_<command>(args)``. The parser and the dispatch are :mod:`fisc.cli`'s; the work itself is
in the modules that own it (evaluation, extraction, export...). Light imports at module level
only: ``fisc --help`` loads these modules and must not load torch."""
