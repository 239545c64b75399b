"""``python -m healthpredict``: the command line, for processes started by the package itself."""

from healthpredict.cli import app

app()
