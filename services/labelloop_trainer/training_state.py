"""A project's training history in KV (``trainer.<project>.state``), changed by compare-and-swap."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from labelloop.stores import KeyValue, kv_update

__all__ = ["DatasetInfo", "ModelInfo", "ProjectState", "StateBook", "model_number"]


class DatasetInfo(BaseModel):
    version: str
    path: str
    n_rows: int
    ref: str | None = None
    """Object-store prefix of the version's files: read from there when set (no shared volume)."""


class ModelInfo(BaseModel):
    model_version: str
    dataset_version: str
    model_ref: str
    accuracy: float
    macro_f1: float


class ProjectState(BaseModel):
    allocated: int = 0
    """Model versions handed out so far (``m0001`` is the first)."""
    triggers: dict[str, str] = Field(default_factory=dict)
    """Trigger event id -> model version: a redelivered trigger reuses its version."""
    datasets: dict[str, DatasetInfo] = Field(default_factory=dict)
    latest_dataset: str | None = None
    rows_at_last_model: int | None = None
    last_model: str | None = None
    """The most recently trained model, promoted or not (convergence compares consecutive ones)."""
    current: ModelInfo | None = None
    """The serving (promoted) model."""
    agreements: dict[str, float | None] = Field(default_factory=dict)
    """Model version -> stop-set agreement with the model trained before it."""
    converged: bool = False

    def history(self) -> list[float | None]:
        return [self.agreements[k] for k in sorted(self.agreements, key=model_number)]


def model_number(version: str) -> int:
    return int(version.lstrip("m") or 0)


class StateBook:
    def __init__(self, state: Callable[[], KeyValue]) -> None:
        self._state = state

    @staticmethod
    def key(project: str) -> str:
        return f"trainer.{project}.state"

    async def get(self, project: str) -> ProjectState:
        entry = await self._state().get(self.key(project))
        if entry is None or not entry.value:
            return ProjectState()
        return ProjectState.model_validate_json(entry.value)

    async def change(self, project: str, fn: Callable[[ProjectState], None]) -> ProjectState:
        """Apply ``fn`` to the stored state under compare-and-swap; return the new state."""
        result: list[ProjectState] = []

        def apply(old: bytes | None) -> bytes:
            state = ProjectState.model_validate_json(old) if old else ProjectState()
            fn(state)
            result[:] = [state]
            return state.model_dump_json().encode()

        await kv_update(self._state(), self.key(project), apply)
        return result[0]
