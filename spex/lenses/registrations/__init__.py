"""One registration per lens: its spec models, version and everything else the system asks a lens
(:class:`spex.lenses.registration.LensRegistration`). Torch-free; the value functions live in the
implementation modules the registrations name (``spex.lenses.prompt_features`` & co.)."""
