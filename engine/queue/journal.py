"""The overnight queue: runs one config after another and never loses or repeats a run.

A journal on disk records each run's state, `pending -> running -> done | failed | interrupted`. It
is one small JSON file, rewritten atomically at every change (engine.fileio.atomic_write_text), so
after a crash, a `kill -9` or a reboot it holds the state from just before or just after the change:

* `queue --folder DIR`: `DIR/.lora-wizard-queue.json`, beside the configs it is about.
* `queue a.json b.json` (and the wizard's runs): in lora-wizard's home (LORA_WIZARD_HOME, default
  ~/.cache/lora-wizard), `queues/<folder name>-<hash>.json`, one journal per working folder, so
  `queue --resume` run from the same place finds it without being told the list again, and no
  file lands in the folder the user happened to be in. A queue recorded by an older version in
  `./lora-wizard-queue.json` that did not finish is still found there.

A run is keyed by its config's path and the SHA-256 of its content: an edited config is a new run.
`--resume` marks a run found `running` as interrupted (its process died; its partial run folder is
kept), then trains every run that is pending or interrupted, each into a new `run<N>/`; done and
failed runs are not trained again (a failure names what to change: edit the config, which makes it a
new run). In folder mode the folder is the to-do list, as in LETS: a finished config moves to
`DIR/complete/`, a failed one to `DIR/failed/` with its error beside it, and a config put back into
DIR (or edited) is trained again. A run that raises is recorded and the queue goes on; a stop
request (Ctrl-C) ends the current run with an `-interrupted` save and stops the queue. With
`queue --skip-invalid`, a config that preflight refuses is recorded failed (its problems as the
reason; no run folder is made) and moved to `failed/` like a run that failed; the others train.

A lock (flock, released by the OS when the process dies) keeps two queues off one journal, which
is what makes "found running" mean "its process died": on the folder of a folder-mode journal, on
`<journal>.lock` beside a list journal (list journals of several folders share one folder).

Training the runs in order is engine/queue/execute.py's; the front-end renders each run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from engine.errors import ConfigError
from engine.fileio import atomic_write_text
from engine.queue.preflight import PlannedRun
from engine.run.distributed import is_main_process

JOURNAL_VERSION = 1
FOLDER_JOURNAL = ".lora-wizard-queue.json"
LIST_JOURNAL = "lora-wizard-queue.json"  # an older version's list journal, in the working folder
LIST_JOURNALS = "queues"  # the folder of list journals in lora-wizard's home
COMPLETE_DIR, FAILED_DIR = "complete", "failed"


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


FINISHED = (RunState.DONE, RunState.FAILED)  # a resume does not train these again
TO_TRAIN = (RunState.PENDING, RunState.INTERRUPTED)


@dataclass
class Entry:
    """One run of the queue, as the journal records it."""

    config: str  # the config file's absolute path when it was queued (or "demo", "wizard")
    sha256: str
    state: RunState = RunState.PENDING
    reason: str | None = None  # why it failed or was interrupted
    run_dir: str | None = None  # the latest attempt's folder
    files: list[str] = field(default_factory=list)
    steps: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    attempts: int = 0
    moved_to: str | None = None  # folder mode: where the config went (complete/ or failed/)
    started: str | None = None
    finished: str | None = None
    notes: list[str] = field(default_factory=list)  # what the run did beyond its config (an out-of-memory retry)

    @property
    def name(self) -> str:
        return Path(self.config).name


@dataclass
class Journal:
    path: Path | None  # None: kept in memory only (demo, replay and the wizard's runs)
    folder: Path | None = None  # folder mode: finished configs are moved out of it
    output: str | None = None  # --output given when the queue was made; a resume keeps it
    entries: list[Entry] = field(default_factory=list)

    def save(self) -> None:
        if self.path is None or not is_main_process():
            return
        data = {
            "version": JOURNAL_VERSION,
            "folder": None if self.folder is None else str(self.folder),
            "output": self.output,
            "updated": now(),
            "runs": [asdict(e) for e in self.entries],
        }
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n", overwrite=True)

    @classmethod
    def load(cls, path: Path) -> Journal:
        fix = f"delete {path} to start the queue over (finished runs keep their run folders)"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"version {data.get('version')!r}, this build reads {JOURNAL_VERSION}")
            entries = [Entry(**{**run, "state": RunState(run["state"])}) for run in data["runs"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a queue journal this build can read ({exc}); {fix}") from None
        folder = data.get("folder")
        return cls(path, None if folder is None else Path(folder), data.get("output"), entries)

    def find(self, config: Path, sha256: str) -> Entry | None:
        """The run of this config content that is still about this file (not moved out of DIR)."""
        key = str(config.resolve())
        return next((e for e in self.entries if e.config == key and e.sha256 == sha256 and e.moved_to is None), None)

    def unfinished(self) -> list[Entry]:
        return [e for e in self.entries if e.state not in FINISHED]


@dataclass
class QueueSetup:
    journal: Journal
    todo: list[Entry]  # to train now, in order
    notes: list[str]  # what was skipped or dropped, and why, for the user


def journal_path(folder: Path | None, cwd: Path | None = None) -> Path:
    """The journal of `queue --folder DIR`, or of a list of configs queued from `cwd`."""
    if folder is not None:
        return Path(folder).resolve() / FOLDER_JOURNAL
    here = (cwd or Path.cwd()).resolve()
    legacy = here / LIST_JOURNAL
    if legacy.is_file() and _unfinished_or_unreadable(legacy):
        return legacy
    from engine.data.sample_data import cache_root

    name = re.sub(r"[^\w.-]", "_", here.name)[:40] or "root"
    digest = hashlib.sha256(str(here).encode("utf-8")).hexdigest()[:12]
    return cache_root() / LIST_JOURNALS / f"{name}-{digest}.json"


def _unfinished_or_unreadable(path: Path) -> bool:
    try:
        return bool(Journal.load(path).unfinished())
    except ConfigError:
        return True  # the queue command says what is wrong with it


def folder_configs(folder: Path) -> list[Path]:
    """The folder's config files in name order (hidden files, such as the journal, are not configs)."""
    return sorted(p for p in Path(folder).glob("*.json") if p.is_file() and not p.name.startswith("."))


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read this config ({exc.strerror}); check the path") from None


def open_queue(path: Path, folder: Path | None, configs: Sequence[Path], *, resume: bool, output: Path | None) -> QueueSetup:
    """`queue CONFIG... | --folder DIR [--resume] [--output DIR]`: the queue to train and what to
    tell the user about the rest. `--output` given to a resume applies to what is left."""
    if folder is not None and not Path(folder).is_dir():
        raise ConfigError(f"--folder {folder}: not a folder")
    if folder is not None and configs:
        raise ConfigError("queue: give config files or --folder DIR, not both")
    if folder is None and not configs and not resume:
        raise ConfigError("queue: name config files, or --folder DIR holding them")
    if resume:
        setup = resume_queue(path, folder, list(configs))
    else:
        files = list(configs) if folder is None else folder_configs(folder)
        if not files:
            raise ConfigError(f"--folder {folder}: no .json config files in it")
        setup = new_queue(path, files, folder, None if output is None else str(output))
    if output is not None:
        setup.journal.output = str(output)
    return setup


def new_queue(path: Path, configs: list[Path], folder: Path | None = None, output: str | None = None) -> QueueSetup:
    """A fresh queue of these configs (saved only when it starts). Refuses while the journal at
    `path` records a queue that did not finish, so a run is never trained twice by mistake."""
    if path.exists():
        left = Journal.load(path).unfinished()
        if left:
            listed = ", ".join(f"{e.name} {e.state.value}" for e in left)
            raise ConfigError(
                f"{path}: the last queue here did not finish ({listed}); add --resume to carry on "
                f"with it, or delete {path.name} to start over"
            )
    seen: set[str] = set()
    for p in configs:
        key = str(Path(p).resolve())
        if key in seen:
            raise ConfigError(f"{p} is listed twice; a queue trains each config once: copy it under another name to train it twice")
        seen.add(key)
    journal = Journal(path, None if folder is None else Path(folder).resolve(), output)
    journal.entries = [Entry(str(Path(p).resolve()), file_sha256(p)) for p in configs]
    return QueueSetup(journal, list(journal.entries), [])


def resume_queue(path: Path, folder: Path | None = None, configs: list[Path] | None = None) -> QueueSetup:
    """Carry on with the queue recorded at `path`: what is to train now, and notes on the rest.

    Nothing is saved here (a dry run changes nothing); the journal is saved when the queue starts.
    """
    if not path.exists():
        if folder is not None:  # nothing recorded yet: the folder is the queue
            setup = new_queue(path, folder_configs(folder), folder)
            setup.notes.append(f"no journal at {path}: starting the folder's queue")
            return setup
        raise ConfigError(f"nothing to resume: no queue journal at {path}; run `queue CONFIG...` (or --folder DIR) without --resume")
    journal = Journal.load(path)
    notes: list[str] = []
    for entry in journal.entries:
        if entry.state == RunState.RUNNING:
            entry.state = RunState.INTERRUPTED
            entry.reason = f"the queue's process ended during this run (crash, kill or reboot); its folder {entry.run_dir} is kept"
    if folder is not None:
        files = folder_configs(folder)
    elif configs:
        files = [Path(p) for p in configs]
    else:  # the journal's own list
        files = list(dict.fromkeys(Path(e.config) for e in journal.entries if e.state in TO_TRAIN))
    todo: list[Entry] = []
    current: list[Entry] = []
    for file in files:
        sha = file_sha256(file)
        entry = journal.find(file, sha)
        if entry is None:  # new, edited, or put back into the folder after it finished
            entry = Entry(str(file.resolve()), sha)
            journal.entries.append(entry)
        current.append(entry)
        if entry.state in TO_TRAIN:
            todo.append(entry)
    retry = "edit it, or put it back into the folder," if folder is not None else "edit it"
    queued = {e.config for e in todo}
    for entry in journal.entries:
        if entry.state == RunState.DONE and entry in current:
            notes.append(f"{entry.name}: done before ({entry.run_dir}), not trained again")
        elif entry.state == RunState.FAILED and entry.config not in queued:
            notes.append(f"{entry.name}: failed before ({entry.reason}); {retry} to train it again")
    for entry in [e for e in journal.entries if e.state in TO_TRAIN and e not in current]:
        journal.entries.remove(entry)  # no longer queued: removed from the folder or the list, or edited
        kept = f"; its folder {entry.run_dir} is kept" if entry.run_dir else ""
        notes.append(f"{entry.name} ({entry.state.value}) is no longer in the queue as it was (removed or edited){kept}")
    return QueueSetup(journal, todo, notes)


@contextmanager
def queue_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the journal (see the module's notes) while a queue uses it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; run one queue per folder
        yield
        return
    if not is_main_process():  # the other processes of a multi-process run never touch the journal
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == FOLDER_JOURNAL:
        fd = os.open(path.parent, os.O_RDONLY)
    else:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another lora-wizard queue is running with the journal {path}; wait for it to finish or stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def forecast_run_dirs(runs: list[PlannedRun]) -> list[Path]:
    """The run<N> folder each run will get if nothing else writes there first (for the plan)."""
    taken: dict[Path, int] = {}
    out = []
    for run in runs:
        parent = Path(run.config.saving.output_folder).expanduser()
        if parent not in taken:
            numbers = [int(m.group(1)) for p in (parent.iterdir() if parent.is_dir() else []) if (m := re.match(r"^run(\d+)$", p.name))]
            taken[parent] = max(numbers, default=0)
        taken[parent] += 1
        out.append(parent / f"run{taken[parent]}")
    return out


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")
