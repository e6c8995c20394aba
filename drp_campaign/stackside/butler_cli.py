"""`butler` with the pipeline mocks' storage classes known: what BPS's final job runs here.

`python -m drp_campaign.stackside.butler_cli aggregate-graph QG REPO ...` is the stock
`butler aggregate-graph`; importing lsst.pipe.base.tests.mocks first registers the `_mock_*`
storage classes the mock DRP pipeline's datasets use (a real pipeline would not need this).
"""

import sys

import lsst.pipe.base.tests.mocks  # noqa: F401 - registers the mock storage classes
from lsst.daf.butler.cli.butler import main

if __name__ == "__main__":
    sys.argv[0] = "butler"
    sys.exit(main())
