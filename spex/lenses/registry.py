"""The lens registry: every lens spex knows, by the name a spec gives in ``lens:``.

Adding a lens: write its implementation module (the value function, ``from_spec``) and its
registration (``spex/lenses/registrations/<name>.py``: spec models, version, view, offline count),
and list the registration in ``_REGISTRATIONS`` below. Nothing else compares lens names.

Torch-free: importing the registry (and so the spec) loads pydantic models only.
"""

from __future__ import annotations

from spex.lenses.registration import LensRegistration
from spex.lenses.registrations import context, data, features, heads

_REGISTRATIONS: tuple[LensRegistration, ...] = (features.REGISTRATION, heads.REGISTRATION, data.REGISTRATION,
                                                context.REGISTRATION)
LENSES: dict[str, LensRegistration] = {lens.name: lens for lens in _REGISTRATIONS}


def names() -> tuple[str, ...]:
    """The registered lens names, in registration order (``features``, ``heads``, ``data``, ``context``)."""
    return tuple(LENSES)


def get(name: str) -> LensRegistration:
    """The registration of lens ``name`` (a KeyError names the known lenses)."""
    try:
        return LENSES[name]
    except (KeyError, TypeError):
        raise KeyError(f"no lens {name!r}; the lenses are {', '.join(LENSES)}") from None


def registrations() -> tuple[LensRegistration, ...]:
    return _REGISTRATIONS


def lens_versions() -> str:
    """Versions of the lens code, ``spex=<version>;features=<v>;heads=<v>;data=<v>;context=<v>``: a lens bumps its
    version when a mask's value changes, which invalidates the prepared subjects cached under it."""
    import spex

    return ";".join([f"spex={spex.__version__}", *(f"{lens.name}={lens.version}" for lens in _REGISTRATIONS)])
