"""The one exception the data layer raises for problems a user can fix."""


class DataError(ValueError):
    """A dataset is missing, corrupt, truncated or could not be downloaded.

    The message always says which file or dataset is at fault and what to do about it
    (usually: delete the file and run `vglab data fetch NAME`, or point --data-dir /
    $VGLAB_DATA at a folder that holds a good copy).
    """
