#!/usr/bin/env python3
"""The Docker build context `.dockerignore` leaves, checked against what the Dockerfile copies.

Applies `.dockerignore` the way Docker does (patterns in order, the last match wins, `!`
re-includes, a pattern matching a parent directory matches what is inside it) to the files
git tracks, then checks that every source of a `COPY` without `--from` is in the context,
and that no build output, repository metadata or local store is. Prints one line per check
and `context: N passed, N failed`; exits 1 on a failure.
"""

import fnmatch
import os
import subprocess
import sys


def patterns(path):
    rules = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((negate, pattern))
    return rules


def matches(pattern, path):
    """Whether `pattern` matches `path` or one of its parent directories."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatchcase("/".join(parts[j:i]), tail) for j in range(i)):
                return True
        elif fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/"):
            return True
    return False


def included(rules, path):
    keep = True
    for negate, pattern in rules:
        if matches(pattern, path):
            keep = negate
    return keep


def copy_sources(dockerfile):
    sources, current = [], ""
    for line in open(dockerfile):
        line = line.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        words = current.split()
        current = ""
        if words and words[0].upper() in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            sources.extend(args[:-1])
    return sources


def main():
    files = subprocess.run(["git", "ls-files"], check=True, capture_output=True, text=True).stdout.split()
    rules = patterns(".dockerignore")
    context = [f for f in files if included(rules, f)]
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok    " if ok else "FAIL  ") + what)
        if ok:
            passed += 1
        else:
            failed += 1

    for source in copy_sources("Dockerfile"):
        source = os.path.normpath(source)
        present = [f for f in context if f == source or f.startswith(source + "/")]
        check(bool(present), f"COPY {source}: in the build context ({len(present)} files)")
    for outside in ("target/", ".git/", ".venv/", "clients/", "tests/", "deploy/", "fuzz/"):
        check(
            not any(f.startswith(outside) or ("/" + outside) in f for f in context)
            and included(rules, outside + "x") is False,
            f"{outside} stays out of the build context",
        )
    for store in ("fintoc-refresh.db", "src/x.db-wal", "client/target/release/x"):
        check(not included(rules, store), f"{store} stays out of the build context")
    print(f"context: {len(context)} of {len(files)} tracked files sent")
    print(f"context: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
