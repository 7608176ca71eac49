"""ScenarioRegistry: which version of each scenario answers, and swapping it atomically on reload."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from model_repository import (
    AliasNotFoundError,
    ModelRepository,
    ObjectStoreError,
    RepositoryError,
    ScenarioNotFoundError,
    VersionNotFoundError,
)

from ..errors import ModelLoadError, NotReadyError, UnknownScenarioError
from .adapters import MultiAdapterCache
from .loader import BaseEncoderCache, EngineSettings, LoadedScenario, load_scenario

logger = logging.getLogger("labelwise.serving")

# A version refused because reading it failed (a timeout or 5xx from the object store, a file system
# error) is tried again after this long even when its files look the same: the failure was the read,
# not the version. A refusal for what the files are (a checksum, a manifest) stands until the files or
# the alias change. Any other refusal (a graph ONNX Runtime would not open, memory or a device that ran
# out while two versions were resident) may be the machine's: tried again after IO_REFUSAL_RETRY_S,
# then twice as long each time up to MAX_REFUSAL_RETRY_S.
IO_REFUSAL_RETRY_S = 30.0
MAX_REFUSAL_RETRY_S = 3600.0


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and the causes behind it, nearest first (each once: a cycle ends the walk)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _failed_reading(exc: BaseException) -> bool:
    """Whether an error, or one in the chain of causes behind it, is a failure to read (I/O), as
    opposed to something wrong with what was read."""
    return any(isinstance(e, OSError | ObjectStoreError) for e in _chain(exc))  # TimeoutError is an OSError


def _refused_for_its_files(exc: BaseException) -> bool:
    """Whether a load failed on what the version's files are (verification: a checksum, a manifest, a
    path), which only a change of the files or the alias mends."""
    return any(isinstance(e, RepositoryError) for e in _chain(exc)[1:])


@dataclass
class ScenarioState:
    """What a replica knows about one scenario."""

    name: str
    alias: str
    loaded: LoadedScenario | None = None
    # (version, fingerprint of its files and alias) last refused: retried only when that changes, or
    # once refused_until has passed (a refusal for a failed read: IO_REFUSAL_RETRY_S)
    refused: tuple[int, tuple] | None = None
    refused_until: float = math.inf
    refusals: int = 0  # refusals of that version in a row (the backoff of a retried one)
    last_error: str | None = None
    # serve-all mode: the scenario has versions but not the alias, so it is not expected to load
    skipped: bool = False
    # repo.manifest_stamp of the loaded version, taken before it was read: a poll that finds another stamp
    # under the serving number compares the manifests (the version was published again under its number)
    stamp: tuple | None = None
    # The loaded version was not found in the repository at a poll (its scenario folder or its version
    # removed): once the alias resolves to its number again, the manifest there is compared with the one
    # serving, as a scenario removed and published again numbers its versions from 1 again.
    gone: bool = False


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
        self.listing_error: str | None = None  # serve-all mode: why the last listing of scenarios failed
        self.listed = not self.serve_all  # serve-all mode: whether a listing of the repository has succeeded

    # ---- lookups (request path) -------------------------------------------------------------
    def get(self, name: str) -> LoadedScenario:
        state = self._states.get(name)
        if state is None and not self.listed:  # serve-all mode: which names exist is not known yet
            raise NotReadyError("the repository has not been listed yet: its scenarios are not known; retry")
        if state is None:
            raise UnknownScenarioError.not_served()
        if state.skipped:  # in the repository, listed as skipped: say why it does not answer
            raise UnknownScenarioError.skipped(name, state.alias)
        loaded = state.loaded
        if loaded is None:
            # The last load error when there is one: a scenario that cannot load says why, rather than
            # "retry" to a client that would retry forever.
            why = f": {state.last_error}" if state.last_error else " yet"
            raise NotReadyError(f"scenario {name!r} is not loaded{why}")
        return loaded

    def states(self) -> list[ScenarioState]:
        # a copy of the values first: a poll (another thread) may add or forget scenarios meanwhile
        return sorted(list(self._states.values()), key=lambda s: s.name)

    def missing(self) -> list[str]:
        """Scenarios expected to serve that have no loaded version (readiness is this list being empty).
        Serve-all mode before a listing of the repository has succeeded: `["(repository not listed yet)"]`,
        and with no scenario to serve (none has the alias) a line saying so: a replica does not say ready
        with nothing to serve."""
        if not self.listed:
            return ["(repository not listed yet)"]
        if self.serve_all and not self.served():
            return [f"(no scenario with the {self.default_alias!r} alias in the repository)"]
        return [s.name for s in self.states() if s.loaded is None and not s.skipped]

    def skipped(self) -> list[str]:
        """Serve-all mode: scenarios in the repository without the default alias (not served)."""
        return [s.name for s in self.states() if s.loaded is None and s.skipped]

    def served(self) -> set[str]:
        """Names that may answer: configured ones, and in serve-all mode those with the alias."""
        return {s.name for s in list(self._states.values()) if not s.skipped}

    # ---- loading (background) --------------------------------------------------------------
    def poll_once(self) -> list[LoadEvent]:
        """Resolve every alias; load and swap in any version that differs from the one serving.

        Each scenario is refreshed on its own: whatever one scenario's alias, manifest or files hold
        (garbage JSON, a missing folder, a broken graph), the others are still polled.
        """
        with self._lock:
            if self.serve_all:
                try:
                    self._follow_repository()
                except Exception as exc:  # a failed listing: the known scenarios are still polled
                    self._note_listing_error(f"{type(exc).__name__}: {exc}")
                else:
                    self._note_listing_error(None)
                    self.listed = True
            events = []
            for state in list(self._states.values()):
                try:
                    event = self._refresh(state)
                except Exception as exc:  # isolation: one scenario's state never ends the pass
                    self._note_error(state, f"{type(exc).__name__}: {exc}")
                    event = None
                if event is not None:
                    events.append(event)
        return events

    def _follow_repository(self) -> None:
        """Serve-all mode: add new scenarios, forget removed ones. One that is serving is forgotten only
        when resolving it says too that it has no published version (a listing that missed it once
        does not unload it)."""
        present = set(self.repo.list_scenarios())
        serving = sum(s.loaded is not None for s in self._states.values())
        if not present and serving:
            # A root that is gone or empty at once (a volume unmounted or being replaced) lists nothing
            # while every scenario resolves as removed: a listing error, and the scenarios keep serving.
            raise RepositoryError(
                f"{self.repo.root} lists no scenario while {serving} are serving here (a volume unmounted, "
                "or the folder replaced?): they keep serving until it lists them again"
            )
        for name in present:
            self._states.setdefault(name, ScenarioState(name, self.default_alias))
        for name, state in [(n, s) for n, s in self._states.items() if n not in present]:
            if state.loaded is not None:
                try:
                    self.repo.resolve(name, state.alias)
                except ScenarioNotFoundError:
                    logger.info("scenario %s was removed from the repository: no longer served", name)
                except Exception:  # cannot tell (the store failed, the alias is garbage): keep serving it
                    continue
                else:
                    continue
            self._forget_row(state.loaded)
            del self._states[name]

    def _forget_row(self, loaded: LoadedScenario | None) -> None:
        """Drop a version's row from its multi-adapter table (shared LoRA), if it has one, and the graph
        from the cache once no row is left on it; rows already bound to it still run
        (MultiAdapterCache.release)."""
        if loaded is not None and loaded.shared is not None:
            self.adapters.release(loaded.shared, loaded.name)

    def _note_listing_error(self, message: str | None) -> None:
        """Serve-all mode: log a failure to list the repository once per change, and its recovery."""
        if message is not None and message != self.listing_error:
            logger.warning(
                "cannot list the scenarios of %s (known ones are still polled): %s", self.repo.root, message
            )
        elif message is None and self.listing_error is not None:
            logger.info("listing the scenarios of %s works again", self.repo.root)
        self.listing_error = message

    def _note_error(self, state: ScenarioState, message: str, level: int = logging.WARNING) -> None:
        """Record why a scenario is not (re)loading; log it once per change, not once per poll."""
        if state.last_error != message:
            logger.log(level, "scenario %s: %s", state.name, message)
        state.last_error = message

    def _alias_moved(self, state: ScenarioState, target: int) -> int | str | None:
        """What the alias names now, when that is no longer `target` (the version just loaded); None when
        it still names it, or when it cannot be read now (the load stands, as it would have)."""
        try:
            now = self.repo.resolve(state.name, state.alias)
        except AliasNotFoundError:
            return "nothing"
        except (RepositoryError, ValueError, KeyError, TypeError):
            return None
        return None if now == target else now

    def _drop_unswapped(self, loaded: LoadedScenario, previous: LoadedScenario | None) -> None:
        """Undo what loading `loaded` did outside the registry: in lora_mode shared its row replaced the
        serving version's row in their multi-adapter table (put back), or joined a table of its own
        (dropped)."""
        if loaded.shared is None:
            return
        if previous is not None and previous.shared is loaded.shared and previous.adapter is not None:
            loaded.shared.install(previous.name, previous.version, previous.adapter)
        else:
            self._forget_row(loaded)

    def _stamp(self, state: ScenarioState, version: int) -> tuple | None:
        """The version's manifest stamp (a stat or a HEAD); None when it cannot be read now."""
        try:
            return self.repo.manifest_stamp(state.name, version)
        except (OSError, RepositoryError):
            return None

    def _replaced(self, state: ScenarioState, version: int) -> bool:
        """Whether the repository's `version` is another version than the one serving under that number
        (its manifest differs: the scenario was removed and published again, numbered from 1 again, or a
        folder moved over the version's between two polls). The manifest is read only when its stamp
        changed (or the version was seen gone): each poll costs one stat, or one HEAD on an object store.
        A manifest that cannot be read counts as replaced: loading it says why it is refused."""
        assert state.loaded is not None
        stamp = self._stamp(state, version)
        if stamp is not None and stamp == state.stamp and not state.gone:
            return False
        try:
            replaced = self.repo.load_manifest(state.name, version) != state.loaded.manifest
        except RepositoryError:
            return True
        if not replaced and stamp is not None:
            state.stamp = stamp  # the same manifest written again (touched, copied): not read again
        return replaced

    def _fingerprint(self, state: ScenarioState, version: int) -> tuple:
        """What must change for a refused version to be tried again: its files or the alias file."""
        return self.repo.fingerprint(state.name, version, state.alias)

    def _refresh(self, state: ScenarioState) -> LoadEvent | None:
        try:
            target = self.repo.resolve(state.name, state.alias)
        except AliasNotFoundError as exc:
            if self.serve_all and state.loaded is None:
                # Versions without the alias: listed as skipped, not awaited by readiness.
                state.skipped, state.last_error = True, None
                return None
            self._note_error(state, f"cannot resolve {state.alias!r}: {exc}")
            return None
        except (RepositoryError, ValueError, KeyError, TypeError) as exc:  # garbage alias JSON too
            if isinstance(exc, ScenarioNotFoundError | VersionNotFoundError) and state.loaded is not None:
                state.gone = True
            self._note_error(state, f"cannot resolve {state.alias!r}: {type(exc).__name__}: {exc}")
            return None
        state.skipped = False
        current = state.loaded.version if state.loaded else None
        if target == current and not self._replaced(state, target):
            state.gone = False
            state.last_error = None  # the alias names what is serving: nothing is wrong any more
            return None
        fingerprint = self._fingerprint(state, target)
        if state.refused == (target, fingerprint) and time.monotonic() < state.refused_until:
            return None  # same version, same files: refused already, logged already
        stamp = self._stamp(state, target)  # before the load: a republish during it is noticed next poll
        try:
            loaded = load_scenario(self.repo, state.name, target, self.settings, self._bases, self.adapters)
        except ModelLoadError as exc:
            state.refusals = state.refusals + 1 if state.refused == (target, fingerprint) else 1
            state.refused = (target, fingerprint)
            if _failed_reading(exc):
                wait = IO_REFUSAL_RETRY_S
            elif _refused_for_its_files(exc):
                wait = math.inf
            else:
                doublings = min(state.refusals - 1, 16)  # past the cap anyway; 2**1024 overflows a float
                wait = min(IO_REFUSAL_RETRY_S * 2**doublings, MAX_REFUSAL_RETRY_S)
            state.refused_until = time.monotonic() + wait
            kept = f"v{current} keeps serving" if current else "nothing is serving it"
            self._note_error(state, f"REFUSED v{target}: {exc} ({kept})", logging.ERROR)
            return LoadEvent(state.name, target, current, refused=True)
        previous = state.loaded
        moved_to = self._alias_moved(state, target)
        if moved_to is not None:
            # Rolled back (or promoted again) during the load, which can take minutes: the version the
            # alias no longer names is not swapped in; the next poll serves what it names now.
            self._drop_unswapped(loaded, previous)
            logger.info(
                "scenario %s: v%s loaded, but %s names %s now: not swapped in (%s)",
                state.name,
                target,
                state.alias,
                f"v{moved_to}" if isinstance(moved_to, int) else moved_to,
                f"v{current} keeps serving" if current else "nothing is serving it",
            )
            return None
        state.loaded, state.refused, state.last_error, state.refusals = loaded, None, None, 0
        state.gone, state.stamp = False, stamp
        if previous is not None and previous.shared is not loaded.shared:
            # it left that multi-adapter table (now a merged or full graph, or another base's table)
            self._forget_row(previous)
        how = f"row of {loaded.shared.folder}" if loaded.shared is not None else loaded.precision
        was = f", was v{current}" if current else ""
        logger.info("serving %s v%s (%s, %s%s)", state.name, target, loaded.manifest.strategy, how, was)
        return LoadEvent(state.name, target, current)
