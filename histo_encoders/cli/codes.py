"""Exit codes of the command line, one place for the handlers, the help text and the README."""

EXIT_OK = 0  # every slide embedded (or already done), or the command did what it was asked
EXIT_SLIDES_FAILED = 1  # the run finished, but some slides failed: see summary.json
EXIT_ERROR = 2  # usage, configuration or encoder error: nothing was run
EXIT_ENVIRONMENT = 3  # the environment stopped the run (output not writable, disk full)
EXIT_INTERNAL = 4  # an unexpected error (a bug): rerun with --debug and report the traceback
EXIT_INTERRUPTED = 130  # interrupted (Ctrl-C); rerunning the same command resumes

EXIT_CODES = (
    (EXIT_OK, "all slides ok (or skipped as already done)"),
    (EXIT_SLIDES_FAILED, "some slides failed; the rest finished and summary.json/csv says why"),
    (EXIT_ERROR, "usage, configuration or encoder error; nothing was run"),
    (
        EXIT_ENVIRONMENT,
        "the environment stopped the run (output not writable, disk full); the "
        "summary of what finished is written where possible, and a rerun resumes",
    ),
    (EXIT_INTERNAL, "unexpected internal error; rerun with --debug for the traceback"),
    (EXIT_INTERRUPTED, "interrupted (a rerun resumes, as after exit code 3)"),
)


def exit_code_help() -> str:
    """The exit codes as the help texts show them."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
