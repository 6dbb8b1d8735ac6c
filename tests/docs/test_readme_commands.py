"""Every project command shown in README.md and docs/*.md runs, as written, on tiny generated inputs.

The pages are read in order (README first, like a user), and their commands run one after the
other in one temporary working folder, each in a subprocess under a timeout (so a hang fails
here, not CI). What a user would supply is generated (``given`` in conftest.py); what the test changes is listed
in ``scale_down``; commands marked ``# needs: …`` are not run but their flags are checked
against ``--help``. Commands that open viewer windows (``prnet-view``, ``--show``) run in a
private X server, where the test presses Esc in each window until the command exits.
docs/development.md explains the conventions.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# ---- the commands of a page ------------------------------------------------------------------
# A command is one line of a ``bash`` / ``sh`` / ``shell`` / ``console`` block (``\\`` continuations
# joined, a leading ``$ `` dropped, ``a && b`` split). ``# needs: <what>`` at the end of a line marks
# that command as not runnable here; on a line of its own, every command after it in the block.

SHELL_LANGS = {"bash", "sh", "shell", "console"}
NEEDS = re.compile(r"#\s*needs:\s*(.+?)\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class DocCommand:
    page: str                 # e.g. "README.md", "docs/data.md"
    line: int                 # 1-based line in the page
    text: str                 # the command as written (comments stripped)
    argv: list[str]           # shell words, environment assignments removed
    env: dict[str, str] = field(default_factory=dict)
    needs: str | None = None  # what a marked command needs
    background: bool = False  # ends with ``&``: runs while the block's next commands run


def shell_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number of the first line, lines) of every shell code block."""
    blocks, lines, start, lang = [], text.splitlines(), None, None
    for i, line in enumerate(lines):
        fence = re.match(r"^\s*```\s*([\w-]*)", line)
        if fence and start is None:
            start, lang = i + 1, fence.group(1).lower()
        elif fence and line.strip() == "```":
            if lang in SHELL_LANGS:
                blocks.append((start + 1, lines[start:i]))
            start, lang = None, None
    return blocks


def commands_of_block(page: str, first_line: int, lines: list[str]) -> list[DocCommand]:
    out: list[DocCommand] = []
    block_needs = None
    joined: list[tuple[int, str]] = []
    for i, raw in enumerate(lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + raw.strip())
        else:
            joined.append((first_line + i, raw.strip()))
    for lineno, line in joined:
        if not line:
            continue
        needs = NEEDS.search(line)
        if line.startswith("#"):
            if needs:
                block_needs = needs.group(1)
            continue
        line = line[2:] if line.startswith("$ ") else line
        for part in re.split(r"\s&&\s|\s;\s", line):
            words = shlex.split(part, comments=True)
            background = bool(words) and words[-1] == "&"
            words = words[:-1] if background else words
            env = {}
            while words and ENV_ASSIGNMENT.match(words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words:
                text = part.split(" #", 1)[0].strip()
                text = text[:-1].rstrip() if background else text
                out.append(DocCommand(page, lineno, text, words, env,
                                      needs.group(1) if needs else block_needs, background))
    return out


def doc_commands(path: Path) -> list[DocCommand]:
    page = str(path.relative_to(ROOT))
    cmds: list[DocCommand] = []
    for first, lines in shell_blocks(path.read_text(encoding="utf-8")):
        cmds.extend(commands_of_block(page, first, lines))
    return cmds


def classify(argv: list[str]) -> tuple[str, list[str] | str]:
    """("run", argv to execute) for a project command, ("skip", reason) for one that is shown but
    not run here, ("other", program) for a program that is not ours (curl, docker, pip…)."""
    prog = argv[0]
    bindir = Path(sys.executable).parent
    if prog.startswith("prnet-"):
        return "run", [str(bindir / prog), *argv[1:]]
    if prog == "make":
        return "skip", "make target: `make test` is this suite, `make demo`/`bench` run outside it"
    if prog in ("python", "python3") or prog.endswith("/python"):
        if len(argv) > 2 and argv[1] == "-m":
            if argv[2].startswith("prnet_keras"):
                return "run", [sys.executable, *argv[1:]]
            if argv[2] == "pytest":
                return "skip", "the test suite itself"
            return "other", f"python -m {argv[2]}"
        if len(argv) > 1 and argv[1].endswith(".py"):
            if argv[1].startswith("bench/"):
                return "skip", "benchmark: long by design, run with `make bench` (docs/performance.md)"
            if (ROOT / argv[1]).is_file() and "/" not in argv[1]:
                return "run", [sys.executable, str(ROOT / argv[1]), *argv[2:]]
        return "other", "python"
    return "other", prog


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [p for p in PAGES if doc_commands(p)]
TIMEOUT_S = 240        # per command; the slowest (a short training run) takes well under a minute
SERVER_START_S = 120


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".index").exists()  # a checkpoint prefix


OUTPUT_FLAGS = {"--out", "--output", "--outputdir"}


def materialise(argv: list[str], cwd: Path, makers: dict) -> list[str]:
    """Make every input the command names that does not exist yet; returns the paths made.
    Outputs (the values of ``--out``, ``--output``, ``--outputdir``) are never made."""
    made = []
    training = "--steps-per-epoch" in argv  # scale_down ran first: a training command
    for prev, word in zip(["", *argv], argv):
        if prev in OUTPUT_FLAGS or (prev == "--hdf5dir" and not training):
            continue
        wanted = [word, word.partition(":")[2]]  # also the path in a value like model:PATH
        if training and prev == "--hdf5dir":  # a folder holding train.hdf5 (+ val.hdf5)
            wanted = [f"{word.rstrip('/')}/train.hdf5", f"{word.rstrip('/')}/val.hdf5"]
        for rel in wanted:
            if rel in makers and not _exists(cwd / rel):
                (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
                makers[rel](cwd / rel)
                made.append(rel)
    return made


# ---- what the test changes, visibly ------------------------------------------------------------

def _set(argv: list[str], flag: str, value: str) -> list[str]:
    if flag in argv:
        i = argv.index(flag)
        return argv[:i + 1] + [value] + argv[i + 2:]
    return argv + [flag, value]


LOOPBACK = re.compile(r"127\.0\.0\.1:(\d+)")


def free_loopback_ports(env: dict[str, str], chosen: dict[str, int]) -> dict[str, str]:
    """Environment values with every ``127.0.0.1:PORT`` (a ``TF_CONFIG`` cluster) moved to a port
    that is free now; ``chosen`` keeps one choice per written port across a page's commands."""
    def swap(m: re.Match) -> str:
        if m.group(1) not in chosen:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                chosen[m.group(1)] = s.getsockname()[1]
        return f"127.0.0.1:{chosen[m.group(1)]}"
    return {k: LOOPBACK.sub(swap, v) for k, v in env.items()}


def scale_down(argv: list[str], help_text: str, server_port: int | None) -> list[str]:
    """The changes to a command as written: 2 workers, small build chunks, few synthetic images,
    1 step per epoch, clients pointed at the server started before them (servers get a free
    port in ``Server``; loopback clusters in the environment, free ports in
    :func:`free_loopback_ports`)."""
    if "--workers" in help_text:
        argv = _set(argv, "--workers", "2")
    if "--commit-every" in help_text:  # tiny inputs in several chunks, so 2 workers really share them
        argv = _set(argv, "--commit-every", "4")
    if "synth" in argv and "--count" in argv:  # one training batch (8) / a few test images
        argv = _set(argv, "--count", "4" if "aflw2000" in argv else "8")
    if "--steps-per-epoch" in help_text:  # training
        argv = _set(_set(_set(argv, "--epochs", "1"), "--steps-per-epoch", "1"), "--validation-steps", "1")
    if "--serverurl" in help_text and server_port and "--serverurl" not in argv and "-u" not in argv:
        argv = argv + ["--serverurl", f"http://127.0.0.1:{server_port}"]
    return argv


# ---- running --------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    return env


def start(argv: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """A command in its own process group (``… &`` commands stay there while the next ones run)."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
    """(exit status, output) of a started command; on timeout (status None) the whole group, spawned
    workers too, is killed."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return None, proc.communicate()[0]


def run(argv: list[str], cwd: Path, env: dict, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
    """Run a command to its end (see :func:`finish`)."""
    return finish(start(argv, cwd, env), timeout)


def opens_windows(argv: list[str]) -> bool:
    return Path(argv[0]).name == "prnet-view" or "--show" in argv


def run_in_x(argv: list[str], cwd: Path, env: dict, xserver, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
    """Like :func:`run`, on ``xserver``'s display; Esc is pressed in each viewer window, as a user
    closing it, until the command exits."""
    with open(cwd / ".viewer-output.txt", "w+") as log:  # a file: nobody reads a pipe while windows are up
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env, DISPLAY=xserver.display), stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        done = xserver.dismiss_until_exit(proc, timeout=timeout)
        if not done:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.seek(0)
        return (proc.returncode if done else None), log.read()


_HELP: dict[tuple, str] = {}


def help_text(argv: list[str], env: dict) -> str:
    """``--help`` of the command (its subcommand included: leading words that are not flags)."""
    n = 3 if argv[1:2] == ["-m"] else (2 if argv[0] == sys.executable else 1)
    while n < len(argv) and not argv[n].startswith("-") and "/" not in argv[n] and "." not in argv[n]:
        n += 1
    key = tuple(argv[:n])
    if key not in _HELP:
        _HELP[key] = run([*argv[:n], "--help"], ROOT, env, timeout=60)[1]
    return _HELP[key]


class Server:
    """A documented ``prnet-serve`` command, running on a free loopback port until stopped."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.argv = _set(argv, "--port", str(self.port))
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def wait_ready(self) -> str | None:
        """None when /healthz and /ui answer, else what went wrong."""
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}:\n{self.proc.stdout.read()[-3000:]}"
            try:
                for route in ("/healthz", "/ui"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=5) as r:
                        assert r.status == 200
                return None
            except OSError:
                time.sleep(0.5)
        return f"not answering after {SERVER_START_S} s"

    def stop(self) -> str | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C: finishes open requests, exits 130
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return "did not stop within 30 s of Ctrl-C"
        out = self.proc.stdout.read()
        return None if self.proc.returncode in (0, 130) else f"exit {self.proc.returncode}:\n{out[-3000:]}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, given_inputs):
    """One working folder for all pages (a user reads the README, then the pages), the input
    makers, and the record of what ran: {command words: page where it ran}."""
    return {"cwd": tmp_path_factory.mktemp("docs-commands"), "makers": given_inputs, "ran": {}, "env": _env()}


def _report(request, line: str) -> None:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capman and reporter:
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)


def _unknown_flags(cmd: DocCommand, argv: list[str], env: dict) -> list[str]:
    helptext = help_text(argv, env)
    return [w.split("=")[0] for w in cmd.argv if w.startswith("--") and w.split("=")[0] not in helptext]


def _is_server(cmd: DocCommand) -> bool:
    return cmd.argv[0] == "prnet-serve" and not cmd.needs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_commands(page: Path, workspace, request):
    cwd, env, ran, failures, server = workspace["cwd"], workspace["env"], workspace["ran"], [], None
    commands = [c for c in doc_commands(page) if classify(c.argv)[0] != "other"]
    background: list[tuple[str, list[str], float, subprocess.Popen]] = []  # (where, argv, start, process)
    ports: dict[str, int] = {}

    def wait_background() -> None:
        while background:
            where, argv, t0, proc = background.pop(0)
            code, out = finish(proc)
            status = f"timed out after {TIMEOUT_S} s (a hang?)" if code is None else f"exit status {code}"
            if code != 0:
                failures.append(f"{where}\n  ran in the background: {' '.join(argv)}\n  {status}; output tail:\n"
                                f"{out[-2500:]}")
            _report(request, f"docs: {'ok' if code == 0 else 'FAILED'} {time.monotonic() - t0:5.1f} s  {where}"
                             "  (in the background)")

    try:
        for i, cmd in enumerate(commands):
            kind, what = classify(cmd.argv)
            where = f"{cmd.page}:{cmd.line}: {cmd.text}"
            if kind == "skip" or cmd.needs:
                if kind == "run" and _unknown_flags(cmd, what, env):  # marked: its flags must exist
                    failures.append(f"{where}\n  flags not in --help: {_unknown_flags(cmd, what, env)}")
                _report(request, f"docs: not run: {where}  ({what if kind == 'skip' else 'needs ' + cmd.needs})")
                continue
            argv = scale_down(list(what), help_text(what, env), server.port if server else None)
            key = (*argv, *sorted(cmd.env.items()))  # same words in another environment: another command
            # the same command already ran (the README's quickstart repeated on a page); a server
            # is started again unless the next command starts another one
            if key in ran and not (_is_server(cmd) and not all(map(_is_server, commands[i + 1:i + 2]))):
                _report(request, f"docs: same  {where}  (ran in {ran[key]})")
                continue
            made = materialise(argv, cwd, workspace["makers"])
            t0 = time.monotonic()
            cmd_env = dict(env, **free_loopback_ports(cmd.env, ports))
            if cmd.background:
                background.append((where, argv, t0, start(argv, cwd, cmd_env)))
                continue
            if _is_server(cmd):
                problem = server.stop() if server else None
                if problem:
                    failures.append(f"{where}\n  the previous server: {problem}")
                server = Server(argv, cwd, dict(env, **cmd.env))
                problem = server.wait_ready()
                code, out, status = (1, problem, "server not ready") if problem else (0, "", "")
            elif opens_windows(argv):
                try:
                    xserver = request.getfixturevalue("xserver")
                except pytest.skip.Exception as exc:
                    _report(request, f"docs: not run: {where}  (opens windows; no X server: {exc})")
                    continue
                code, out = run_in_x(argv, cwd, dict(env, **cmd.env), xserver)
                status = f"timed out after {TIMEOUT_S} s (a hang?)" if code is None else f"exit status {code}"
            else:
                code, out = run(argv, cwd, cmd_env)
                status = f"timed out after {TIMEOUT_S} s (a hang?)" if code is None else f"exit status {code}"
            took = time.monotonic() - t0
            if code == 0:
                ran[key] = cmd.page
            else:
                failures.append(f"{where}\n  ran: {' '.join(argv)}\n  generated inputs: {made}\n"
                                f"  {status}; output tail:\n{out[-2500:]}")
            note = f"  (port {server.port}, up until the page's next server or its end)" if _is_server(cmd) else ""
            _report(request, f"docs: {'ok' if code == 0 else 'FAILED'} {took:5.1f} s  {where}{note}")
            wait_background()  # the block's ``wait``: a command started with ``&`` ends with the next one
        wait_background()
    finally:
        for _, _, _, proc in background:  # a failure above left them running
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        problem = server.stop() if server else None
        if problem:
            failures.append(f"{page.name}: server stop: {problem}")
    assert not failures, "\n\n".join(failures)


# ---- the parser itself --------------------------------------------------------------------------

def test_blocks_and_needs_marks_are_parsed():
    text = "\n".join([
        "```bash", "prnet-train --hdf5dir d \\", "    --workers 4   # a comment",
        "prnet-predict --image a.jpg --model m.keras   # needs: display",
        "# needs: GPU", "A=1 prnet-train --hdf5dir e && prnet-evaluate --model x", "```",
        "```python", "prnet-not-shell", "```", "```console", "$ make demo", "```",
    ])
    blocks = shell_blocks(text)
    assert [first for first, _ in blocks] == [2, 12]
    cmds = commands_of_block("p.md", *blocks[0])
    assert [c.argv[0] for c in cmds] == ["prnet-train", "prnet-predict", "prnet-train", "prnet-evaluate"]
    assert cmds[0].argv == ["prnet-train", "--hdf5dir", "d", "--workers", "4"] and cmds[0].needs is None
    assert cmds[1].needs == "display" and cmds[2].needs == "GPU" and cmds[3].needs == "GPU"
    assert cmds[2].env == {"A": "1"} and cmds[0].line == 2
    assert classify(commands_of_block("p.md", *blocks[1])[0].argv)[0] == "skip"
    assert classify(["python", "build_dataset.py", "--help"])[0] == "run"
    assert classify(["curl", "x"]) == ("other", "curl")


def test_scale_down_is_visible_and_limited():
    helptext = "--workers --steps-per-epoch --epochs"
    argv = scale_down(["prnet-train", "--hdf5dir", "d", "--workers", "8"], helptext, None)
    assert argv == ["prnet-train", "--hdf5dir", "d", "--workers", "2", "--epochs", "1",
                    "--steps-per-epoch", "1", "--validation-steps", "1"]
    predict = ["prnet-predict", "--image", "a.jpg"]
    assert scale_down(list(predict), "--image --model", None) == predict


def test_background_commands_and_loopback_clusters():
    block = ["T='{\"w\": [\"127.0.0.1:12345\", \"127.0.0.1:12346\"]}' prnet-train --hdf5dir d &",
             "prnet-train --hdf5dir e"]
    first, second = commands_of_block("p.md", 1, block)
    assert first.background and first.argv == ["prnet-train", "--hdf5dir", "d"] and not first.text.endswith("&")
    assert not second.background
    chosen: dict[str, int] = {}
    moved = free_loopback_ports(first.env, chosen)["T"]
    ports = [int(p) for p in LOOPBACK.findall(moved)]
    assert len(set(ports)) == 2 and not {12345, 12346} & set(ports)
    assert free_loopback_ports(first.env, chosen)["T"] == moved  # one choice per written port
