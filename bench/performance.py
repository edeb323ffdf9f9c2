"""Regenerates docs/performance.md: every block between `<!-- bench: CMD -->` and
`<!-- /bench -->` is replaced by what CMD prints now (its leading `## ` heading dropped: the
document has its own), and the `<!-- generated -->` line says when. Prose outside the blocks is
kept. With arguments, only the blocks whose command contains one of them are run.

usage: bench/performance.sh [SECTION...]    e.g. bench/performance.sh fanout web peers"""

import datetime
import re
import subprocess
import sys
import tempfile

DOC = "docs/performance.md"
# A marker is a line of its own; the command never spans lines.
BLOCK = re.compile(r"^(<!-- bench: ([^\n]+?) -->\n)(.*?)^(<!-- /bench -->)", re.S | re.M)


def output_of(cmd):
    print(f"running: {cmd}", file=sys.stderr, flush=True)
    # Files, not pipes: a helper the command leaves running (a moto server) cannot hold them
    # open, so this waits for the command alone.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(["bash", "-c", cmd], stdout=out, stderr=err).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"{cmd} failed with exit code {code}; its block is unchanged")
    lines = stdout.splitlines()
    while lines and (lines[0].startswith("## ") or not lines[0].strip()):
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


def main():
    only = sys.argv[1:]
    doc = open(DOC).read()
    commands = []
    for m in BLOCK.finditer(doc):
        cmd = m.group(2)
        if (not only or any(word in cmd for word in only)) and cmd not in commands:
            commands.append(cmd)
    if not commands:
        raise SystemExit(f"no block of {DOC} matches {only}")
    # The document is written after each command, so an hour's run that fails late keeps what
    # it measured before.
    for cmd in commands:
        result = output_of(cmd)
        doc = open(DOC).read()
        doc = BLOCK.sub(lambda m: m.group(1) + result + m.group(4) if m.group(2) == cmd
                        else m.group(0), doc)
        open(DOC, "w").write(stamped(doc, cmd))
    print(f"{DOC}: {len(commands)} command(s) rerun", file=sys.stderr)


def stamped(doc, cmd):
    """The `<!-- generated -->` line keeps when each block's command last ran."""
    today = datetime.date.today().isoformat()
    line = re.search(r"<!-- generated -->(.*)\n", doc)
    runs = dict(re.findall(r"`([^`]+)` ([0-9-]+)", line.group(1))) if line else {}
    runs[cmd] = today
    listed = "; ".join(f"`{c}` {day}" for c, day in runs.items())
    return re.sub(r"<!-- generated -->.*\n", lambda _: f"<!-- generated -->Blocks last rerun by "
                  f"`bench/performance.sh`: {listed}.\n", doc)


main()
