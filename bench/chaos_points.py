"""Aimed kills for bench/chaos.py: run the real CLI with one crash point armed.

    python bench/chaos_points.py POINT N -- SAFETRIGGER_ARGS...

wraps one function so that the Nth time the process reaches it, the process SIGKILLs itself
right there, leaving on disk exactly what a kill at that moment leaves (SQLite's crash tests
and TiKV's fail points work the same way). The wrapping lives here, not in the package: the
toolkit carries no test hooks. Exits 0 when the stage finished without reaching the point.

Points:
  chunk-write      a stage file's append (run store): the first half of the chunk's bytes reach
                   the file, cut mid-line, then the kill (the worst a kill mid-write leaves)
  judge-batch      a judge's batch: half of it judged, nothing stored
  train-step       a trainer step: forward + backward done, the optimizer step not
  checkpoint-save  a trainer checkpoint: weights written, optimizer / scheduler / trainer state not
  merge            merging LoRA into the base: the merged folder written, not yet renamed into place
  replace:NAME     an atomic write of the file NAME (e.g. report.html, manifest.json,
                   generate.stats.json): the temporary file written, not yet renamed over it
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POINTS = ("chunk-write", "judge-batch", "train-step", "checkpoint-save", "merge", "replace:NAME")


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Counter:
    def __init__(self, n: int):
        self.left = n

    def hit(self) -> bool:
        """True on the Nth call."""
        self.left -= 1
        return self.left == 0


def arm(point: str, n: int) -> None:
    """Wrap the function behind ``point`` so that its Nth call kills the process."""
    hits = Counter(n)
    if point == "chunk-write":
        from safetrigger import runstore

        real = runstore.StageFile.append

        def append(self, rows):
            rows = list(rows)
            fresh = [r for r in rows if str(r["id"]) not in self.done_ids()]
            if fresh and hits.hit():
                data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh).encode("utf-8")
                target = self.write_path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._repair(target)
                with target.open("ab") as f:
                    f.write(data[: max(1, len(data) // 2)])
                    f.flush()
                    os.fsync(f.fileno())
                _die()
            return real(self, rows)

        runstore.StageFile.append = append
    elif point == "judge-batch":
        from safetrigger.judges import base

        real = base.Judge._judge_blocks

        def judge_blocks(self, items):
            if hits.hit():
                self._judge(items[: max(1, len(items) // 2)])
                _die()
            return real(self, items)

        base.Judge._judge_blocks = judge_blocks
    elif point == "train-step":
        import transformers

        real = transformers.Trainer.training_step

        def training_step(self, *a, **kw):
            out = real(self, *a, **kw)
            if hits.hit():
                _die()
            return out

        transformers.Trainer.training_step = training_step
    elif point == "checkpoint-save":
        import transformers

        real = transformers.Trainer._save_optimizer_and_scheduler  # private: pinned by the harness's own check

        def save_optimizer_and_scheduler(self, *a, **kw):
            if hits.hit():
                _die()
            return real(self, *a, **kw)

        transformers.Trainer._save_optimizer_and_scheduler = save_optimizer_and_scheduler
    elif point == "merge":
        from safetrigger.training import runner

        real = runner.check_merged

        def check_merged(*a, **kw):
            real(*a, **kw)
            if hits.hit():
                _die()

        runner.check_merged = check_merged
    elif point.startswith("replace:"):
        from safetrigger import atomic

        name, real = point.split(":", 1)[1], os.replace

        class _Os:  # atomic's view of os, with replace wrapped
            def __getattr__(self, attr):
                return getattr(os, attr)

            @staticmethod
            def replace(src, dst):
                if Path(dst).name == name and hits.hit():
                    _die()
                return real(src, dst)

        atomic.os = _Os()
    else:
        raise SystemExit(f"unknown crash point {point!r}; one of: {', '.join(POINTS)}")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] != "--":
        raise SystemExit(__doc__)
    point, n = argv[0], int(argv[1])
    sys.path.insert(0, str(ROOT / "src"))
    arm(point, n)
    from safetrigger.cli import main as cli

    return cli(argv[3:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
