"""A named registry: models, criteria, selections, branches, optimizers, strategies."""

from lottery_tf import errors


class Registry:
    """Maps names to builders; unknown names get the list of known ones."""

    def __init__(self, kind):
        self._kind = kind
        self._entries = {}

    def register(self, name):
        """Decorator adding the decorated callable under `name`."""

        def add(entry):
            if name in self._entries:
                raise ValueError(f"{self._kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name):
        """Removes `name` (e.g. a plug-in registered for one experiment)."""
        self._entries.pop(name, None)

    def names(self):
        return sorted(self._entries)

    def in_registration_order(self):
        return list(self._entries)

    def get(self, name):
        if name not in self._entries:
            raise errors.LotteryError(
                f"unknown {self._kind} {name!r}; known: {', '.join(self.names())}"
            )
        return self._entries[name]
