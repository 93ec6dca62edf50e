"""Where a sweep's run folder lives: a local (or NFS) folder, or an object-store URI.

For a URI (``s3://``, ``gs://``: any filesystem ``pyarrow.fs.FileSystem.from_uri`` knows) Tune
writes trial results, checkpoints and the trials' TensorBoard logs to the URI itself; the
driver's own files (config.json, run.json, teacher.json, failed_trials.json, results_summary.csv,
the analysis) are written in a local mirror of the run folder (``cfg.run_dir``) and uploaded,
and downloaded before a resume, so a sweep resumes from the URI alone on another machine.
Only ``s3://`` is tested here (moto); ``gs://`` takes the same pyarrow code path.
"""
from __future__ import annotations

from pathlib import Path

from wbvb import storage
from wbvb.storage import is_uri

TUNE = "tune"
TB = "tensorboard"
RESULT_FILES = ("result.json", "error.txt")


class RunStorage:
    """The run folder at ``uri`` and its local copy ``local`` (the same folder when ``uri`` is local)."""

    def __init__(self, uri: str, local: Path):
        self.uri, self.local = uri, Path(local)
        self.remote = is_uri(uri)
        self.fs = self.root = None
        if self.remote:  # the same resolution (and clear error) as teacher data locations
            self.fs, self.root = storage.filesystem(storage.location(uri))

    @classmethod
    def of(cls, cfg) -> "RunStorage":
        return cls(cfg.run_uri, cfg.run_dir)

    # ---- what Tune is given ----------------------------------------------------------------
    def tune_storage(self) -> dict:
        """RunConfig / Tuner.restore keywords: the run folder and, for a URI, its pyarrow filesystem."""
        if self.remote:
            return {"storage_path": self.root, "storage_filesystem": self.fs}
        return {"storage_path": str(self.local), "storage_filesystem": None}

    def tune_dir(self) -> str:
        return f"{self.root}/{TUNE}" if self.remote else str(self.local / TUNE)

    def has_tune_dir(self) -> bool:
        if not self.remote:
            return (self.local / TUNE).is_dir()
        import pyarrow.fs

        return self.fs.get_file_info(self.tune_dir()).type == pyarrow.fs.FileType.Directory

    def describe(self, name: str = "") -> str:
        """A location to print: the URI (or local folder), optionally a file in it."""
        return f"{self.uri.rstrip('/')}/{name}" if name else self.uri

    # ---- the driver's files -----------------------------------------------------------------
    def pull_driver_files(self) -> list[str]:
        """Download the run folder's top-level files into the mirror (before a start or resume)."""
        if not self.remote:
            return []
        import shutil

        import pyarrow.fs

        shutil.rmtree(self.local, ignore_errors=True)  # a cache of the URI: never trust what an older run left
        self.local.mkdir(parents=True, exist_ok=True)
        got = []
        for info in self._list(self.root, recursive=False):
            if info.type == pyarrow.fs.FileType.File:
                self._download(info.path, self.local / info.base_name)
                got.append(info.base_name)
        return got

    def push_driver_files(self) -> list[str]:
        """Upload the mirror's top-level files (config, summary, analysis) to the run URI."""
        if not self.remote:
            return []
        sent = []
        for f in sorted(self.local.iterdir()):
            if f.is_file() and not f.name.startswith(".tmp-"):
                with self.fs.open_output_stream(f"{self.root}/{f.name}") as out:
                    out.write(f.read_bytes())
                sent.append(f.name)
        return sent

    def pull_results(self) -> int:
        """Copy each trial's result.json (and error.txt, TensorBoard events) into the mirror for the analysis.

        ``tune/<trial>/tensorboard/*`` lands in ``tensorboard/<trial>/``, where a local run keeps it.
        """
        if not self.remote:
            return 0
        import pyarrow.fs

        n = 0
        base = f"{self.root}/{TUNE}/"
        for info in self._list(base, recursive=True):
            if info.type != pyarrow.fs.FileType.File:
                continue
            parts = info.path[len(base):].split("/")
            if len(parts) == 2 and parts[1] in RESULT_FILES:
                self._download(info.path, self.local / TUNE / parts[0] / parts[1])
            elif len(parts) >= 3 and parts[1] == TB:
                self._download(info.path, self.local / TB / parts[0] / "/".join(parts[2:]))
            else:
                continue
            n += 1
        return n

    def _list(self, path: str, recursive: bool):
        import pyarrow.fs

        return self.fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True, recursive=recursive))

    def _download(self, src: str, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(src) as f:
            dst.write_bytes(f.read())
