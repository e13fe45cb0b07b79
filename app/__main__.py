"""``python -m app worker``: the Faust command line, with this project's commands added."""

from app.commands import app

app.main()
