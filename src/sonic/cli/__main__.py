"""``python -m sonic.cli``: how ``sonic serve --workers N`` and the launcher start servers."""

from sonic.cli.main import main

main()
