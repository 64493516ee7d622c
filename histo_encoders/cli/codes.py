"""Exit codes of the command line, one place for the handlers, the help text and the README."""

EXIT_OK = 0
EXIT_SLIDES_FAILED = 1
EXIT_ERROR = 2
