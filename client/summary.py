"""What a batch did: counts, failures with reasons, throughput."""

from __future__ import annotations

from dataclasses import dataclass, field

from .issues import Issue


@dataclass
class Summary:
    """The outcome of one `run_queue` call. `failed` maps job key -> reason."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    images: int = 0
    resubmitted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    invalid: list[Issue] = field(default_factory=list)
    elapsed_s: float = 0.0
    stopped: str | None = None

    @property
    def images_per_min(self) -> float:
        return 60.0 * self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Every planned job finished and every row was valid."""
        return not self.failed and not self.invalid and self.stopped is None and self.done + self.skipped == self.total

    def format(self) -> str:
        """A few lines for people: counts, then each failure and invalid row."""
        lines = [
            f"done {self.done}, failed {len(self.failed)}, skipped {self.skipped} (finished before), "
            f"invalid rows {len({issue.row for issue in self.invalid})}, resubmitted {self.resubmitted}; "
            f"{self.images} images in {self.elapsed_s:.1f} s ({self.images_per_min:.1f} images/min)"
        ]
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; rerun the same command to resume")
        lines += [f"failed {key}: {reason}" for key, reason in self.failed.items()]
        lines += [f"invalid {issue}" for issue in self.invalid]
        return "\n".join(lines)
