"""ScenarioRegistry: which version of each scenario answers, and swapping it atomically on reload."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from model_repository import ModelRepository, RepositoryError

from ..errors import ModelLoadError, NotReadyError, UnknownScenarioError
from .adapters import MultiAdapterCache
from .loader import BaseEncoderCache, EngineSettings, LoadedScenario, load_scenario

logger = logging.getLogger("labelwise.serving")


@dataclass
class ScenarioState:
    """What a replica knows about one configured scenario."""

    name: str
    alias: str
    loaded: LoadedScenario | None = None
    refused_version: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class LoadEvent:
    """What one poll did to one scenario: loaded a version (swapping out `previous`) or refused it."""

    name: str
    version: int
    previous: int | None
    refused: bool = False


class ScenarioRegistry:
    """Maps a scenario name to the LoadedScenario serving it; reloads when its alias moves.

    A swap replaces one dict entry (atomic under the GIL): rows already bound to the old
    LoadedScenario finish on it, new rows get the new one.
    """

    def __init__(
        self,
        repo: ModelRepository,
        scenarios: dict[str, str] | None,
        default_alias: str,
        settings: EngineSettings,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.default_alias = default_alias
        self.serve_all = scenarios is None
        self._states: dict[str, ScenarioState] = {
            name: ScenarioState(name, alias) for name, alias in (scenarios or {}).items()
        }
        self._bases = BaseEncoderCache()
        self.adapters = MultiAdapterCache()  # lora_mode shared: one graph + table per base
        self._lock = threading.Lock()  # one poll at a time; lookups never take it

    # ---- lookups (request path) -------------------------------------------------------------
    def get(self, name: str) -> LoadedScenario:
        state = self._states.get(name)
        if state is None:
            raise UnknownScenarioError(f"unknown scenario {name!r}; served: {sorted(self._states)}")
        loaded = state.loaded
        if loaded is None:
            raise NotReadyError(f"scenario {name!r} is not loaded yet")
        return loaded

    def states(self) -> list[ScenarioState]:
        return [self._states[k] for k in sorted(self._states)]

    def missing(self) -> list[str]:
        """Configured scenarios that have no loaded version (readiness is this list being empty)."""
        return [s.name for s in self.states() if s.loaded is None]

    # ---- loading (background) --------------------------------------------------------------
    def poll_once(self) -> list[LoadEvent]:
        """Resolve every alias; load and swap in any version that differs from the one serving."""
        with self._lock:
            if self.serve_all:
                for name in self.repo.list_scenarios():
                    self._states.setdefault(name, ScenarioState(name, self.default_alias))
            events = [self._refresh(state) for state in list(self._states.values())]
        return [e for e in events if e is not None]

    def _refresh(self, state: ScenarioState) -> LoadEvent | None:
        try:
            target = self.repo.resolve(state.name, state.alias)
        except RepositoryError as exc:
            if state.last_error != str(exc):
                logger.warning("scenario %s: cannot resolve %r: %s", state.name, state.alias, exc)
            state.last_error = str(exc)
            return None
        current = state.loaded.version if state.loaded else None
        if target == current or target == state.refused_version:
            return None
        try:
            loaded = load_scenario(self.repo, state.name, target, self.settings, self._bases, self.adapters)
        except ModelLoadError as exc:
            state.refused_version, state.last_error = target, str(exc)
            kept = f"v{current} keeps serving" if current else "nothing is serving it"
            logger.error("REFUSED %s v%s: %s (%s)", state.name, target, exc, kept)
            return LoadEvent(state.name, target, current, refused=True)
        state.loaded, state.refused_version, state.last_error = loaded, None, None
        how = f"row of {loaded.shared.folder}" if loaded.shared is not None else loaded.precision
        logger.info("serving %s v%s (%s, %s)", state.name, target, loaded.manifest.strategy, how)
        return LoadEvent(state.name, target, current)
