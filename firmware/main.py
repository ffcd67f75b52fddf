# Runs after boot.py on a hard reset: load /config.json and run the configured role.
# A missing or broken config prints one line and leaves the REPL free (no reboot loop).
from app import run

run.main()
