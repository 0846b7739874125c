"""A named registry, shared by the model and pruning-strategy registries."""

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

    def names(self):
        return sorted(self._entries)

    def get(self, name):
        if name not in self._entries:
            raise errors.LotteryError(
                f"unknown {self._kind} {name!r}; known: {', '.join(self.names())}"
            )
        return self._entries[name]
