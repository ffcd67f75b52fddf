"""`midge passwd`: create and update the broker's password file, like mosquitto_passwd.

  midge passwd -c FILE USER          create FILE (replacing it) with USER, password prompted
  midge passwd FILE USER             add or change USER
  midge passwd -b FILE USER PASSWORD password on the command line (scripts; visible in ps)
  midge passwd -D FILE USER          delete USER

Entries are salted PBKDF2-SHA256 (lib/midge/auth.py); the file is written atomically, mode 0600.
"""

import getpass
import os
import sys

from host_tools.cli import CLIError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_arguments(p):
    p.add_argument("-c", dest="create", action="store_true", help="create a new file (replaces it)")
    p.add_argument(
        "-b", dest="batch", action="store_true", help="take the password from the command line"
    )
    p.add_argument("-D", dest="delete", action="store_true", help="delete the user")
    p.add_argument("--iterations", type=int, default=None, help="PBKDF2 iterations (default 10000)")
    p.add_argument("file")
    p.add_argument("user")
    p.add_argument("password", nargs="?")


def _auth():
    lib = os.path.join(ROOT, "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from midge import auth

    return auth


def run(args):
    auth = _auth()
    if ":" in args.user or not args.user.strip():
        raise CLIError("user name must be non-empty and contain no ':'")
    if args.batch != (args.password is not None):
        raise CLIError("give PASSWORD on the command line only together with -b")
    if args.create and args.delete:
        raise CLIError("-c and -D do not go together")
    users = {}
    if not args.create:
        if not os.path.exists(args.file):
            raise CLIError("%s does not exist (use -c to create it)" % args.file)
        try:
            users = auth.read_passwords(args.file)
        except auth.AuthError as e:
            raise CLIError(str(e)) from None
    if args.delete:
        if users.pop(args.user, None) is None:
            raise CLIError("user %r is not in %s" % (args.user, args.file))
    else:
        pw = args.password
        if pw is None:
            pw = getpass.getpass("Password: ")
            if pw != getpass.getpass("Reenter password: "):
                raise CLIError("passwords do not match")
        if not pw:
            raise CLIError("empty password")
        users[args.user] = auth.hash_password(pw, args.iterations or auth.ITERATIONS)
    tmp = args.file + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for u in sorted(users):
            f.write("%s:%s\n" % (u, users[u]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, args.file)
    return 0
