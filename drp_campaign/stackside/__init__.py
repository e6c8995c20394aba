"""Code that runs inside the science-stack environment (Python 3.12, lsst.*), called via a site setup command."""
