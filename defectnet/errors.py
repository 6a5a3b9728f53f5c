"""The one exception type for a user's mistake (a bad file, config value, element or checkpoint),
and how it gets out of Hydra's instantiation unwrapped.

Console commands print such an error as one line (``defectnet-<command>: error: …``) and exit
with code 2; every other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Something the user gave is wrong; the message names the input, the field and the fix."""


def instantiate_checked(node):
    """``instantiate``, with a user's mistake raised by the object's constructor (a
    ``UserError``) passed on as itself rather than wrapped in Hydra's exception."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, UserError):
            raise exc.__cause__ from None
        raise
