"""The one exception type for a user's mistake: a bad file, config value, element or checkpoint.

Console commands print such an error as one line (``defectnet-<command>: error: …``) and exit
with code 2; every other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Something the user gave is wrong; the message names the input, the field and the fix."""
