"""funnelsync: lead and free-trial data from many sources into one customer database."""

__version__ = "0.1.0"
