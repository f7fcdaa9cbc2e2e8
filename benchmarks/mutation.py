"""Mutation testing of the modules whose behaviour the tests pin (`make mutation`).

``python benchmarks/mutation.py run [--modules metrics search ...]`` runs mutmut (configured in
``pyproject.toml``'s ``[tool.mutmut]``) on the mutants of the chosen modules that have no result
yet (``--rerun``: all of them; ``--survivors``: those that survived or timed out, after new
tests), each judged by its group's test files (:data:`TESTS`); ``python
benchmarks/mutation.py report`` prints each module's kill rate from mutmut's results under
``mutants/`` (``--survivors --diff``: what survived and how) and, with ``--json``, writes them.

Kill rate = killed / (killed + survived + timeout): a timeout counts against it; a survivor
listed with its reason in ``benchmarks/mutation_equivalent.json`` (no input tells it from the
code) is counted as "equivalent", outside the rate. Mutants that
no selected test reaches ("no tests"), that were skipped, or that crashed the worker
("suspicious", "segfault") are counted apart and listed, not folded in.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import itertools
import json
import os
import platform
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module group -> the source files it mutates (each is listed in [tool.mutmut] only_mutate)
MODULES: dict[str, list[str]] = {
    "metrics": ["fisc/metrics/micro_ap.py"],
    "postprocess": [
        "fisc/postprocess/steps.py",
        "fisc/postprocess/spec.py",
        "fisc/postprocess/sweep.py",
    ],
    "search": [
        "fisc/search/exact.py",
        "fisc/search/backends.py",
        "fisc/search/torch_knn.py",
        "fisc/search/choose.py",
    ],
    "pipeline": ["fisc/augment/pipeline.py"],
    "losses": [
        "fisc/losses/infonce_koleo.py",
        "fisc/losses/contrastive_xbm.py",
        "fisc/losses/arcface.py",
        "fisc/losses/memory.py",
        "fisc/losses/gather.py",
        "fisc/losses/mix.py",
        "fisc/losses/triplet_margin.py",
    ],
    "phase2": ["fisc/export/phase2.py"],
    "datapath": ["fisc/data/decode.py", "fisc/augment/glyphs.py"],
}

# module group -> the test files its mutants are tested with. mutmut records, per function,
# every selected test that calls it (a metric function is reached by training tests too); each
# mutant runs only those of its group's files, so that it is judged by the fast tests written
# for its module (a stricter test than the whole selection, and minutes less per survivor).
TESTS: dict[str, list[str]] = {
    "metrics": ["tests/test_micro_ap.py", "tests/test_isc2021_interop.py"],
    "postprocess": ["tests/test_postprocess.py", "tests/test_isc2021_interop.py"],
    "search": ["tests/test_search.py", "tests/test_micro_ap.py", "tests/test_isc2021_interop.py"],
    "pipeline": ["tests/test_pipeline.py"],
    "losses": ["tests/losses/"],
    "phase2": ["tests/export/test_phase2.py"],
    "datapath": ["tests/test_decode.py", "tests/test_glyphs.py"],
}

# mutmut's exit codes (mutmut.stats.status_by_exit_code, mutmut 3.8) folded into our classes
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    5: "no_tests",
    33: "no_tests",
    34: "skipped",
    37: "killed",  # caught by a type checker (none is configured)
    2: "not_checked",  # interrupted: tested again by the next run
    None: "not_checked",
}


def module_name(path: str) -> str:
    """``fisc/search/exact.py`` -> ``fisc.search.exact`` (mutmut's prefix of its mutant names)."""
    return path[: -len(".py")].replace("/", ".")


def load_results(path: str) -> dict[str, int | None]:
    """mutmut's exit code per mutant of one source file (empty when it has not run yet)."""
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def classify(code: int | None) -> str:
    return STATUS.get(code, "suspicious")


MESSAGE_CALLS = {"debug", "info", "warning", "error", "exception", "warn", "print"}


def _is_message(stmt: ast.stmt) -> bool:
    """Whether a statement only makes a message: a ``raise``, a log/print/warn call, or a
    ``return SomeError(...)`` (a helper that builds the exception its caller raises)."""
    if isinstance(stmt, ast.Raise):
        return True
    value = getattr(stmt, "value", None)
    if isinstance(stmt, (ast.Expr, ast.Return)) and isinstance(value, ast.Call):
        f = value.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        return name in MESSAGE_CALLS or name.endswith(("Error", "Exception", "Warning"))
    return False


@functools.cache
def _source(node: ast.FunctionDef) -> str:
    """``ast.unparse(node)``, once per function (each original is diffed against many mutants)."""
    return ast.unparse(node)


@functools.cache
def _functions(path: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((ROOT / "mutants" / path).read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def mutant_diff(path: str, name: str, funcs: dict[str, ast.FunctionDef]) -> list[tuple]:
    """``(line of the original function's unparsed text, original line, mutant line)`` for
    each line the mutant changes (empty text where a line is added or removed)."""
    mangled = name.rpartition(".")[2]
    orig = funcs.get(mangled.rpartition("__mutmut_")[0] + "__mutmut_orig")
    mutant = funcs.get(mangled)
    if orig is None or mutant is None:
        return []
    a = _source(orig).splitlines()
    b = _source(mutant).splitlines()
    s = len(orig.decorator_list) + 1  # the decorators and the def line (its name differs)
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a[s:], b[s:]).get_opcodes():
        if tag != "equal":
            for k in range(max(i2 - i1, j2 - j1)):
                old = a[s + i1 + k] if i1 + k < i2 else ""
                new = b[s + j1 + k] if j1 + k < j2 else ""
                out.append((min(i1 + k, max(i2 - 1, i1)) + s + 1, old.strip(), new.strip()))
    return out


def survivor_kind(path: str, name: str, funcs: dict[str, ast.FunctionDef]) -> str:
    """``"message"`` when every line the mutant changes lies in a statement that only makes a
    message (see :func:`_is_message`): the mutant alters an error or log text, not what the
    code computes. Otherwise ``"code"``."""
    mangled = name.rpartition(".")[2]
    orig = funcs.get(mangled.rpartition("__mutmut_")[0] + "__mutmut_orig")
    changed = mutant_diff(path, name, funcs)
    if orig is None or not changed:
        return "code"
    tree = ast.parse(_source(orig))
    stmts = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and n.lineno > 1]
    for line, _, _ in changed:
        inner = [n for n in stmts if n.lineno <= line <= n.end_lineno]
        if not inner or not _is_message(min(inner, key=lambda n: n.end_lineno - n.lineno)):
            return "code"
    return "message"


EQUIVALENT_FILE = ROOT / "benchmarks" / "mutation_equivalent.json"


def function_key(name: str) -> str:
    """A mutant's function, as mutmut mangles it: ``fisc.metrics.micro_ap.x__labelled`` for
    ``fisc.metrics.micro_ap.x__labelled__mutmut_62``."""
    return name.rpartition("__mutmut_")[0]


def load_equivalents(path: Path = EQUIVALENT_FILE) -> list[dict]:
    """The mutants listed as equivalent: ``{"function", "changes": [[old, new], ...], "reason"}``
    entries. A mutant is named by what it changes, not by mutmut's number (which shifts when
    its function is edited)."""
    if not path.is_file():
        return []
    entries = json.loads(path.read_text())
    for e in entries:
        if set(e) != {"function", "changes", "reason"} or not e["reason"].strip():
            raise ValueError(f"{path.name}: each entry needs function, changes and a reason: {e}")
    return entries


def equivalent_reason(name: str, changes: list[tuple], entries: list[dict]) -> str | None:
    """The listed reason why mutant ``name`` (with ``changes`` from :func:`mutant_diff`) is
    equivalent, or None."""
    key = [[old, new] for _, old, new in changes]
    for e in entries:
        if e["function"] == function_key(name) and e["changes"] == key:
            return e["reason"]
    return None


def summarize(files: list[str], equivalents: list[dict] | None = None) -> dict:
    """Counts, kill rate and the names of the mutants that were not killed, over ``files``."""
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()  # survivors: "code" or "message"
    equivalents = load_equivalents() if equivalents is None else equivalents
    listed: dict[str, list[str]] = {
        "equivalent": [],
        "survived (code)": [],
        "survived (message)": [],
        "timeout": [],
        "no_tests": [],
        "other": [],
    }
    for path in files:
        for name, code in sorted(load_results(path).items()):
            status = classify(code)
            if status == "survived":
                funcs = _functions(path)
                if equivalent_reason(name, mutant_diff(path, name, funcs), equivalents):
                    counts["equivalent"] += 1  # not a survivor: outside the kill rate
                    listed["equivalent"].append(name)
                    continue
            counts[status] += 1
            if status == "survived":
                kind = survivor_kind(path, name, funcs)
                kinds[kind] += 1
                listed[f"survived ({kind})"].append(name)
            elif status in ("timeout", "no_tests"):
                listed[status].append(name)
            elif status not in ("killed", "not_checked"):
                listed["other"].append(f"{name} ({status})")
    decided = counts["killed"] + counts["survived"] + counts["timeout"]
    total = sum(counts.values())  # survivors listed as equivalent are in neither
    return {
        "ran": total > counts["not_checked"],
        "mutants": total,
        "killed": counts["killed"],
        "survived": counts["survived"],
        "survived_message_only": kinds["message"],
        "equivalent": counts["equivalent"],
        "timeout": counts["timeout"],
        "no_tests": counts["no_tests"],
        "skipped": counts["skipped"],
        "suspicious": counts["suspicious"],
        "not_checked": counts["not_checked"],
        "kill_rate": round(counts["killed"] / decided, 4) if decided else None,
        "not_killed": {k: v for k, v in listed.items() if v},
    }


def pending_mutants(files: list[str]) -> list[str]:
    """The mutants of ``files`` that have no result yet."""
    return [
        n for p in files for n, code in load_results(p).items() if classify(code) == "not_checked"
    ]


def restrict_tests() -> None:
    """Keep, in mutmut's recorded function -> tests map (``mutants/mutmut-stats.json``), only
    the tests of each function's module group (:data:`TESTS`)."""
    path = ROOT / "mutants" / "mutmut-stats.json"
    if not path.is_file():
        return
    stats = json.loads(path.read_text())
    prefixes = {module_name(f) + ".": tuple(TESTS[m]) for m in MODULES for f in MODULES[m]}
    for func, tests in stats["tests_by_mangled_function_name"].items():
        for prefix, allowed in prefixes.items():
            if func.startswith(prefix):
                stats["tests_by_mangled_function_name"][func] = [
                    t for t in tests if t.startswith(allowed)
                ]
    path.write_text(json.dumps(stats, indent=4))


THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def running_mutmut(root: Path | None = None) -> list[int]:
    """The ids of the ``mutmut run`` processes working in ``root`` (this checkout by default) or
    below it, from Linux's ``/proc`` (none found elsewhere). mutmut forks its workers, so a run
    shows as several processes with the same command line."""
    root = (root or ROOT).resolve()
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or another user's
            continue
        words = [os.path.basename(a.decode(errors="replace")) for a in argv]
        if not any(w == "mutmut" and nxt == "run" for w, nxt in itertools.pairwise(words)):
            continue
        if cwd == root or root in cwd.parents:
            found.append(int(entry.name))
    return sorted(found)


def cmd_run(args: argparse.Namespace) -> int:
    # two runs write the same result files under mutants/: the later one's results can be lost
    # (2026-12-02: a first run that never exited, its workers still forking an hour later, kept
    # overwriting the record of the runs after it)
    if pids := running_mutmut():
        print(
            f"another `mutmut run` is working in {ROOT} (process ids {' '.join(map(str, pids))}):"
            " both would write mutants/'s result files and lose results. Wait for it, or stop"
            f" it: kill {' '.join(map(str, pids))}",
            file=sys.stderr,
        )
        return 2
    files = [f for m in args.modules for f in MODULES[m]]
    restrict_tests()
    fresh = not all((ROOT / "mutants" / (f + ".meta")).is_file() for f in files)
    if args.names:
        names = args.names
    elif args.survivors:  # after new tests: judge the survivors (and timeouts) again
        names = [
            n
            for p in files
            for n, code in load_results(p).items()
            if classify(code) in ("survived", "timeout")
        ]
    elif args.rerun or fresh:
        # every mutant of the modules, by mutmut's name pattern
        names = [module_name(f) + ".*" for f in files]
    else:
        names = pending_mutants(files)
        if not names:
            print(f"every mutant of {', '.join(args.modules)} has a result (--rerun to redo)")
            return 0
    # mutmut's own script beside this Python (`python -m mutmut` re-executes its __main__)
    mutmut = [str(Path(sys.executable).with_name("mutmut")), "run"]
    mutmut += ["--max-children", str(args.max_children)]
    print(f"mutmut run over {', '.join(args.modules)}: {len(names)} name patterns", flush=True)
    # mutmut takes this process's place, so that a Ctrl-C (or `timeout -s INT`) reaches it and
    # it stops its workers; each result is saved as it comes, a next run resumes
    os.chdir(ROOT)
    # one thread per mutant process, and OpenMP threads that sleep when idle: with --max-children
    # processes on as many cores, a second torch (libgomp) thread spinning at its barrier took
    # about 40% of each process's CPU time in the Phase 2 group's run (/proc and gdb)
    for var, value in THREAD_ENV.items():
        os.environ.setdefault(var, value)
    os.execv(mutmut[0], [*mutmut, *names])


def cmd_report(args: argparse.Namespace) -> int:
    rows = {m: summarize(MODULES[m]) for m in args.modules}
    print(
        f"{'module':<12} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7} "
        f"{'equiv':>5} {'no tests':>8} {'unrun':>5} {'kill rate':>9}"
    )
    for m, r in rows.items():
        rate = "-" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.1f}%"
        print(
            f"{m:<12} {r['mutants']:>7} {r['killed']:>6} {r['survived']:>8} {r['timeout']:>7} "
            f"{r['equivalent']:>5} {r['no_tests']:>8} {r['not_checked']:>5} {rate:>9}"
        )
    if args.survivors:
        for m, r in rows.items():
            funcs_of = {p: _functions(p) for p in MODULES[m]}
            for status, names in r["not_killed"].items():
                for n in names:
                    print(f"{status:<9} {n}")
                    path = next(p for p in MODULES[m] if n.startswith(module_name(p) + "."))
                    for _, old, new in mutant_diff(path, n, funcs_of[path]) if args.diff else []:
                        print(f"      - {old}\n      + {new}")
    if args.json:
        import mutmut

        out = {
            "tool": f"mutmut {mutmut.__version__}",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "kill_rate": "killed / (killed + survived + timeout); equivalent survivors apart",
            "modules": {m: {"files": MODULES[m], **r} for m, r in rows.items()},
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run mutmut over the modules' unchecked mutants")
    report = sub.add_parser("report", help="per-module kill rates from mutants/")
    for p in (run, report):
        p.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES))
    run.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    run.add_argument("--rerun", action="store_true", help="redo mutants that have a result")
    run.add_argument("--survivors", action="store_true", help="rerun survivors and timeouts")
    run.add_argument("names", nargs="*", help="only these mutants (names or mutmut patterns)")
    report.add_argument("--json", help="also write the figures to this file")
    report.add_argument("--survivors", action="store_true", help="list the mutants not killed")
    report.add_argument("--diff", action="store_true", help="with --survivors: their changes")
    run.set_defaults(fn=cmd_run)
    report.set_defaults(fn=cmd_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
